package ticket

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// KeySize is the size in bytes of every key shake stores or derives.
const KeySize = 32

// ErrKeySize reports a key file that does not hold exactly KeySize bytes.
var ErrKeySize = errors.New("key must be exactly 32 bytes")

// Labels for HKDF-SHA256. Each names its purpose and version; the campaign and shard are
// appended, so no two derived keys share an info string.
const (
	labelShardAEAD = "shake/v1/shard-aead|"
	labelTicketMAC = "shake/v1/ticket-mac|"
)

// ShardKey derives the AEAD key that edge shard `shard` of `campaign` seals user tickets
// with. Edges hold only their own shard's key.
func ShardKey(campaignKey []byte, campaign string, shard int) ([]byte, error) {
	return derive(campaignKey, labelShardAEAD+campaign+"|"+strconv.Itoa(shard))
}

// MACKey derives the key the generator signs every precomputed ticket with. Only the
// generator and the verifier (and the settler, to re-check amounts) ever hold it.
func MACKey(campaignKey []byte, campaign string) ([]byte, error) {
	return derive(campaignKey, labelTicketMAC+campaign)
}

func derive(secret []byte, info string) ([]byte, error) {
	if len(secret) != KeySize {
		return nil, ErrKeySize
	}
	return hkdf.Key(sha256.New, secret, nil, info, KeySize)
}

// NewKey returns KeySize bytes from the operating system's CSPRNG.
func NewKey() []byte {
	k := make([]byte, KeySize)
	// crypto/rand.Read never returns an error on supported platforms (Go 1.24+).
	_, _ = rand.Read(k)
	return k
}

// WriteKeyFile writes key to path with mode 0600, refusing to overwrite an existing file.
func WriteKeyFile(path string, key []byte) error {
	if len(key) != KeySize {
		return ErrKeySize
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("refusing to overwrite existing key %s", path)
		}
		return fmt.Errorf("cannot create key %s: %w", path, err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("cannot write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("cannot sync key %s: %w", path, err)
	}
	return f.Close()
}

// ReadKeyFile reads a key file and checks its size.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read key %s: %w", path, err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("key %s holds %d bytes: %w", path, len(b), ErrKeySize)
	}
	return b, nil
}
