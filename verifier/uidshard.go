package verifier

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxUIDShards bounds V in --uid-shard I/V.
const MaxUIDShards = 1 << 16

// UIDShard is this verifier's share of the users: it opens tickets only for users with
// uid mod Count = Index. The zero value means 0/1, every user.
type UIDShard struct {
	Index, Count uint64
}

// ParseUIDShard parses "I/V" with 0 <= I < V <= MaxUIDShards.
func ParseUIDShard(s string) (UIDShard, error) {
	is, vs, ok := strings.Cut(s, "/")
	if !ok {
		return UIDShard{}, fmt.Errorf("%q is not I/V", s)
	}
	i, err1 := strconv.ParseUint(is, 10, 32)
	v, err2 := strconv.ParseUint(vs, 10, 32)
	if err1 != nil || err2 != nil {
		return UIDShard{}, fmt.Errorf("%q is not I/V with decimal I and V", s)
	}
	if v < 1 || v > MaxUIDShards || i >= v {
		return UIDShard{}, fmt.Errorf("%q: need 0 <= I < V <= %d", s, MaxUIDShards)
	}
	return UIDShard{Index: i, Count: v}, nil
}

// String returns "I/V".
func (u UIDShard) String() string {
	if u.Count == 0 {
		return "0/1"
	}
	return strconv.FormatUint(u.Index, 10) + "/" + strconv.FormatUint(u.Count, 10)
}

// owns reports whether uid belongs to this shard.
func (u UIDShard) owns(uid uint64) bool { return u.Count <= 1 || uid%u.Count == u.Index }
