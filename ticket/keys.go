package ticket

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
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

// Labels for HKDF-SHA256. Each names its purpose and version; the campaign, the
// generation and the shard are appended, so no two derived keys share an info string.
const (
	labelShardAEAD   = "shake/v1/shard-aead|"
	labelTicketMAC   = "shake/v1/ticket-mac|"
	labelClaimSig    = "shake/v1/claim-sig|"
	labelManifestSig = "shake/v1/manifest-sig|"
)

// GenerationLen is the length of a generation id: 128 random bits in lower-case hex.
const GenerationLen = 32

// ErrBadGeneration reports a generation id that is not 32 lower-case hex digits.
var ErrBadGeneration = errors.New("generation must be 32 lower-case hex digits")

// NewGeneration returns a fresh generation id. `shake gen` picks one at every run, so a
// campaign id generated twice under the same campaign.key never shares a derived key.
func NewGeneration() string {
	var b [GenerationLen / 2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidGeneration reports whether s is a well-formed generation id.
func ValidGeneration(s string) bool {
	if len(s) != GenerationLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkIDs(campaign, generation string) error {
	if err := CheckCampaign(campaign); err != nil {
		return err
	}
	if !ValidGeneration(generation) {
		return fmt.Errorf("%w: %q", ErrBadGeneration, generation)
	}
	return nil
}

// ShardKey derives the AEAD key that edge shard `shard` of one generation of `campaign`
// seals user tickets with. Edges hold only their own shard's key.
func ShardKey(campaignKey []byte, campaign, generation string, shard int) ([]byte, error) {
	if err := checkIDs(campaign, generation); err != nil {
		return nil, err
	}
	return derive(campaignKey, labelShardAEAD+campaign+"|"+generation+"|"+strconv.Itoa(shard))
}

// MACKey derives the key the generator signs every precomputed ticket of one generation
// of a campaign with. Only the generator and the verifier (and the settler, to re-check
// amounts) ever hold it.
func MACKey(campaignKey []byte, campaign, generation string) ([]byte, error) {
	if err := checkIDs(campaign, generation); err != nil {
		return nil, err
	}
	return derive(campaignKey, labelTicketMAC+campaign+"|"+generation)
}

// ClaimKey derives the key verifiers sign claims with and the settler checks them with
// (see ClaimSigner). Edges never hold it.
func ClaimKey(campaignKey []byte, campaign, generation string) ([]byte, error) {
	if err := checkIDs(campaign, generation); err != nil {
		return nil, err
	}
	return derive(campaignKey, labelClaimSig+campaign+"|"+generation)
}

// manifestKey derives the key the generator signs manifest.json with. It is per campaign
// (the generation is inside the signed document).
func manifestKey(campaignKey []byte, campaign string) ([]byte, error) {
	if err := CheckCampaign(campaign); err != nil {
		return nil, err
	}
	return derive(campaignKey, labelManifestSig+campaign)
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

// ErrKeyExposed reports a key file that group or other users can read or write.
var ErrKeyExposed = errors.New("key file is accessible to group or others (want mode 0600)")

// CheckKeyFileMode returns ErrKeyExposed (wrapped with the path and mode) when the key
// file at path grants any permission to group or others. Servers log it as a warning at
// start: a readable campaign.key or edge key lets any local user mint or forge.
func CheckKeyFileMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot stat key %s: %w", path, err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: %w", path, mode, ErrKeyExposed)
	}
	return nil
}

// ReadKeyFile reads a key file and checks its size. It does not check the file's mode;
// see CheckKeyFileMode.
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

// ErrKeyMismatch reports a key that is well formed but not the one a shard or manifest
// was generated with.
var ErrKeyMismatch = errors.New("key does not match the campaign's key check")

// KeyCheck is a public fingerprint of a shard key: the first 16 bytes of
// HMAC-SHA256(shardKey, "shake/v1/key-check|<campaign>|<shard>"), in hex. The generator
// records it in the shard header and the manifest, so an edge refuses a key that would
// seal tokens no verifier can open, and a verifier refuses a campaign.key that is not
// the one the campaign was generated with. It reveals nothing usable about the key.
func KeyCheck(shardKey []byte, campaign string, shard int) string {
	m := hmac.New(sha256.New, shardKey)
	m.Write([]byte("shake/v1/key-check|" + campaign + "|" + strconv.Itoa(shard)))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// CheckShardKey returns ErrKeyMismatch unless shardKey matches want (a KeyCheck value).
// An empty want (a shard made before key checks existed) passes.
func CheckShardKey(shardKey []byte, campaign string, shard int, want string) error {
	if want == "" {
		return nil
	}
	got := KeyCheck(shardKey, campaign, shard)
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return fmt.Errorf("%w (shard %d of campaign %s)", ErrKeyMismatch, shard, campaign)
	}
	return nil
}
