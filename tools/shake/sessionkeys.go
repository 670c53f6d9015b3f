package main

import (
	"flag"
	"strings"

	"shake/ticket"
)

// sessionKeysFlag collects --session-key FILE, which every server that checks sessions
// takes more than once during a key rotation: the server accepts a token signed with any
// of the keys. The first is the server's SessionKey, the others MoreSessionKeys.
type sessionKeysFlag struct {
	first string
	more  []string
}

func (f *sessionKeysFlag) String() string {
	if f == nil || f.first == "" {
		return ""
	}
	return strings.Join(append([]string{f.first}, f.more...), ",")
}

func (f *sessionKeysFlag) Set(v string) error {
	if f.first == "" {
		f.first = v
	} else {
		f.more = append(f.more, v)
	}
	return nil
}

// read reads every key: the first, and the others.
func (f *sessionKeysFlag) read() ([]byte, [][]byte, error) {
	first, err := ticket.ReadKeyFile(f.first)
	if err != nil {
		return nil, nil, err
	}
	var more [][]byte
	for _, p := range f.more {
		k, err := ticket.ReadKeyFile(p)
		if err != nil {
			return nil, nil, err
		}
		more = append(more, k)
	}
	return first, more, nil
}

// addSessionKeyFlag defines --session-key on fs.
func addSessionKeyFlag(fs *flag.FlagSet) *sessionKeysFlag {
	f := &sessionKeysFlag{}
	fs.Var(f, "session-key", "session.key `file` shared with the login system (required); repeat it during a key rotation to accept tokens signed with any of the keys")
	return f
}
