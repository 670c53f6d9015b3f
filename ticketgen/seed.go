package ticketgen

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// SeedFile is the name of the seed file inside OutDir.
const SeedFile = "seed"

// SeedSize is the size of a seed in bytes: 256 bits, so the published commitment
// (its SHA-256) cannot be inverted by trying seeds.
const SeedSize = 32

// maxSeedFile bounds what ReadSeedFile reads: a seed file is 65 bytes.
const maxSeedFile = 1 << 10

// NewSeed returns a fresh random seed.
func NewSeed() []byte {
	s := make([]byte, SeedSize)
	if _, err := rand.Read(s); err != nil {
		panic("BUG: crypto/rand failed: " + err.Error())
	}
	return s
}

// SeedFromUint64 derives a seed from a small number, for reproducible test and
// rehearsal campaigns (`shake gen --seed S`). Such a seed can be guessed: a manifest
// published before the event with a guessable seed lets anyone compute every ticket's
// amount in advance, so real events use a random seed (the default).
func SeedFromUint64(s uint64) []byte {
	var in [len("shake/ticketgen/seed/v1") + 8]byte
	n := copy(in[:], "shake/ticketgen/seed/v1")
	binary.BigEndian.PutUint64(in[n:], s)
	sum := sha256.Sum256(in[:])
	return sum[:]
}

// seedFileBytes is the seed file's content: the seed in lower-case hex and a newline.
func seedFileBytes(seed *[SeedSize]byte) []byte {
	return []byte(hex.EncodeToString(seed[:]) + "\n")
}

// SeedCommitment returns the manifest's seed_sha256 for seed: the hex SHA-256 of the seed
// file's exact bytes, so `sha256sum DIR/seed` prints it.
func SeedCommitment(seed *[SeedSize]byte) string {
	sum := sha256.Sum256(seedFileBytes(seed))
	return hex.EncodeToString(sum[:])
}

// ReadSeedFile reads a seed file and returns the seed and the SHA-256 of the file's
// exact bytes (which the reveal compares with the manifest's commitment).
func ReadSeedFile(path string) (*[SeedSize]byte, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("%w seed %s: %v", ErrUnreadable, path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSeedFile+1))
	if err != nil {
		return nil, "", fmt.Errorf("%w seed %s: %v", ErrUnreadable, path, err)
	}
	if len(b) > maxSeedFile {
		return nil, "", fmt.Errorf("seed %s: larger than %d bytes, not a seed file", path, maxSeedFile)
	}
	sum := sha256.Sum256(b)
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != SeedSize {
		return nil, "", fmt.Errorf("seed %s: want %d hex characters", path, 2*SeedSize)
	}
	var seed [SeedSize]byte
	copy(seed[:], raw)
	return &seed, hex.EncodeToString(sum[:]), nil
}

// checkSeed sets the plan's seed from cfg.SeedSecret, or from cfg.Seed when it is empty.
func (p *plan) checkSeed() error {
	switch len(p.cfg.SeedSecret) {
	case 0:
		copy(p.seed[:], SeedFromUint64(p.cfg.Seed))
	case SeedSize:
		copy(p.seed[:], p.cfg.SeedSecret)
	default:
		return configErr("seed", "a seed is %d bytes, have %d", SeedSize, len(p.cfg.SeedSecret))
	}
	return nil
}
