package ticket

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// The shard file.
//
//	magic "SHAKETK1"
//	u32 header length | header (JSON, ShardHeader) | u32 CRC-32C of the header
//	blocks, each: u32 records | u32 compressed length | u32 CRC-32C | zstd data
//	   the CRC covers the block index (u32), the two lengths and the compressed data, so
//	   a flipped, dropped, duplicated or reordered block is caught before decompression;
//	   the data decompresses to records*4 bytes of amounts (u32 LE) then records*12 bytes
//	   of ticket MACs (columnar, so the amounts compress)
//	trailer: u32 0 | u32 0 | u32 blocks | u64 count | u64 amount | u32 CRC-32C of the trailer
//
// All integers are little endian. Every record is also MAC'd by the generator, which the
// verifier and `shake inspect --key` check; the CRCs catch accidental corruption early.
const (
	shardMagic = "SHAKETK1"
	// ShardVersion is the version of the shard header written by this code.
	ShardVersion = 1
	// BlockRecords is the number of records per block (the last block may hold fewer).
	BlockRecords = 1 << 16
	maxHeaderLen = 1 << 20
	recordLen    = 4 + MACSize
)

// RecordSize is the resident size of one ticket in memory.
const RecordSize = 16

// ErrCorrupt is wrapped by every shard or manifest integrity failure.
var ErrCorrupt = errors.New("corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one precomputed ticket as held in memory: 16 bytes.
type Record struct {
	Amount uint32
	MAC    [MACSize]byte
}

// RoundWindow is a timed round of a campaign. A zero Start and End mean always open.
type RoundWindow struct {
	Index int       `json:"index"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// AlwaysOpen reports whether the window has no time bounds.
func (w RoundWindow) AlwaysOpen() bool { return w.Start.IsZero() && w.End.IsZero() }

// RoundRange is the part of one shard's tickets that belongs to one round: a contiguous
// range of ids.
type RoundRange struct {
	Round       int    `json:"round"`
	FirstTicket uint64 `json:"first_ticket"`
	Count       uint64 `json:"count"`
	Amount      int64  `json:"amount"`
}

// ShardHeader describes one shard file.
type ShardHeader struct {
	Version     int           `json:"version"`
	Campaign    string        `json:"campaign"`
	Currency    string        `json:"currency"`
	Shard       int           `json:"shard"`
	Shards      int           `json:"shards"`
	FirstTicket uint64        `json:"first_ticket"`
	Count       uint64        `json:"count"`
	Amount      int64         `json:"amount"`
	TTLSeconds  int64         `json:"ttl_seconds"`
	Rounds      []RoundWindow `json:"rounds"`
	RoundRanges []RoundRange  `json:"round_ranges"`
	CreatedAt   time.Time     `json:"created_at"`
	// KeyCheck is KeyCheck(shard key, campaign, shard): the edge refuses a key that
	// does not match it.
	KeyCheck string `json:"key_check,omitempty"`
	// PerUser is the campaign's per-user rule (see Manifest.PerUser): the edge's default.
	PerUser int `json:"per_user"`
	// Generation is the campaign generation the shard belongs to (see Manifest.Generation).
	Generation string `json:"generation"`
	// PerDevice and MaxRisk are the campaign's device and risk rules (see
	// Manifest.PerDevice): the edge's defaults.
	PerDevice int  `json:"per_device,omitempty"`
	MaxRisk   *int `json:"max_risk,omitempty"`
}

// Validate checks the header's internal consistency.
func (h *ShardHeader) Validate() error {
	if h.Version != ShardVersion {
		return fmt.Errorf("unsupported shard version %d", h.Version)
	}
	if err := CheckCampaign(h.Campaign); err != nil {
		return err
	}
	if !ValidCurrency(h.Currency) {
		return fmt.Errorf("bad currency %q", h.Currency)
	}
	if h.Shards <= 0 || h.Shards > MaxShards || h.Shard < 0 || h.Shard >= h.Shards {
		return fmt.Errorf("shard %d of %d out of range", h.Shard, h.Shards)
	}
	if !ValidGeneration(h.Generation) {
		return fmt.Errorf("%w: %q", ErrBadGeneration, h.Generation)
	}
	if h.FirstTicket == 0 || h.FirstTicket > MaxTickets || h.Count > MaxTickets {
		return fmt.Errorf("bad ticket range first=%d count=%d", h.FirstTicket, h.Count)
	}
	if h.Amount < 0 || h.TTLSeconds <= 0 || h.TTLSeconds > MaxTTLSeconds {
		return fmt.Errorf("bad amount %d or ttl %d", h.Amount, h.TTLSeconds)
	}
	if err := checkRules(h.PerUser, h.PerDevice, h.MaxRisk); err != nil {
		return err
	}
	if err := validateWindows(h.Rounds); err != nil {
		return err
	}
	if len(h.RoundRanges) != len(h.Rounds) {
		return fmt.Errorf("%d round ranges for %d rounds", len(h.RoundRanges), len(h.Rounds))
	}
	next, count, amount := h.FirstTicket, uint64(0), int64(0)
	for i, r := range h.RoundRanges {
		if r.Round != i || r.FirstTicket != next || r.Amount < 0 {
			return fmt.Errorf("round range %d is not contiguous", i)
		}
		// Checked before adding, so crafted counts cannot wrap around to h.Count.
		if r.Count > h.Count-count || r.Amount > h.Amount-amount {
			return fmt.Errorf("round range %d exceeds the shard's count or amount", i)
		}
		next += r.Count
		count += r.Count
		amount += r.Amount
	}
	if count != h.Count || amount != h.Amount {
		return fmt.Errorf("round ranges sum to %d tickets / %d, header says %d / %d", count, amount, h.Count, h.Amount)
	}
	return nil
}

func validateWindows(ws []RoundWindow) error {
	if len(ws) == 0 || len(ws) > 1<<16 {
		return fmt.Errorf("need 1..65536 rounds, have %d", len(ws))
	}
	if len(ws) == 1 && ws[0].AlwaysOpen() {
		return nil
	}
	for i, w := range ws {
		if w.Index != i {
			return fmt.Errorf("round %d has index %d", i, w.Index)
		}
		if w.AlwaysOpen() || !w.End.After(w.Start) {
			return fmt.Errorf("round %d: end must be after start", i)
		}
		if i > 0 && w.Start.Before(ws[i-1].End) {
			return fmt.Errorf("round %d overlaps round %d", i, i-1)
		}
	}
	return nil
}

// RoundOf returns the round of ticket id, which must lie in the shard.
func (h *ShardHeader) RoundOf(id uint64) int {
	for _, r := range h.RoundRanges {
		if id < r.FirstTicket+r.Count {
			return r.Round
		}
	}
	return len(h.RoundRanges) - 1
}

// ShardWriter streams a shard file. Records must be appended in ticket id order.
type ShardWriter struct {
	w       *bufio.Writer
	h       ShardHeader
	enc     *zstd.Encoder
	amounts []byte
	macs    []byte
	n       int
	blocks  uint32
	count   uint64
	amount  int64
	comp    []byte
	err     error
}

// NewShardWriter validates h and writes the magic and header to w.
func NewShardWriter(w io.Writer, h ShardHeader) (*ShardWriter, error) {
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("bad shard header: %w", err)
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	sw := &ShardWriter{
		w: bufio.NewWriterSize(w, 256<<10), h: h, enc: enc,
		amounts: make([]byte, 0, 4*BlockRecords), macs: make([]byte, 0, MACSize*BlockRecords),
	}
	var b [4]byte
	sw.w.WriteString(shardMagic)
	binary.LittleEndian.PutUint32(b[:], uint32(len(hj)))
	sw.w.Write(b[:])
	sw.w.Write(hj)
	binary.LittleEndian.PutUint32(b[:], crc32.Checksum(hj, castagnoli))
	if _, err := sw.w.Write(b[:]); err != nil {
		return nil, err
	}
	return sw, nil
}

// Append adds the next ticket's record.
func (sw *ShardWriter) Append(amount uint32, mac [MACSize]byte) error {
	if sw.err != nil {
		return sw.err
	}
	sw.amounts = binary.LittleEndian.AppendUint32(sw.amounts, amount)
	sw.macs = append(sw.macs, mac[:]...)
	sw.n++
	sw.count++
	sw.amount += int64(amount)
	if sw.n == BlockRecords {
		sw.flush()
	}
	return sw.err
}

func (sw *ShardWriter) flush() {
	if sw.n == 0 || sw.err != nil {
		return
	}
	plain := append(sw.amounts, sw.macs...)
	sw.amounts = plain[:0] // reuse: amounts' backing array now holds both columns
	sw.comp = sw.enc.EncodeAll(plain, sw.comp[:0])
	var hdr [12]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(sw.n))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(sw.comp)))
	binary.LittleEndian.PutUint32(hdr[8:], blockCRC(sw.blocks, hdr[:8], sw.comp))
	sw.w.Write(hdr[:])
	_, sw.err = sw.w.Write(sw.comp)
	sw.blocks++
	sw.n = 0
	sw.macs = sw.macs[:0]
}

func blockCRC(index uint32, lens []byte, data []byte) uint32 {
	var ib [4]byte
	binary.LittleEndian.PutUint32(ib[:], index)
	c := crc32.Update(0, castagnoli, ib[:])
	c = crc32.Update(c, castagnoli, lens)
	return crc32.Update(c, castagnoli, data)
}

// Close writes the last block and the trailer and flushes. It fails if the records
// appended do not add up to the header's count and amount.
func (sw *ShardWriter) Close() error {
	sw.flush()
	if sw.err != nil {
		return sw.err
	}
	if sw.count != sw.h.Count || sw.amount != sw.h.Amount {
		return fmt.Errorf("shard %d: wrote %d tickets / %d, header promised %d / %d",
			sw.h.Shard, sw.count, sw.amount, sw.h.Count, sw.h.Amount)
	}
	var t [32]byte
	binary.LittleEndian.PutUint32(t[8:], sw.blocks)
	binary.LittleEndian.PutUint64(t[12:], sw.count)
	binary.LittleEndian.PutUint64(t[20:], uint64(sw.amount))
	binary.LittleEndian.PutUint32(t[28:], crc32.Checksum(t[:28], castagnoli))
	sw.w.Write(t[:])
	sw.enc.Close()
	return sw.w.Flush()
}

// Shard is a shard file loaded into memory.
type Shard struct {
	Header  ShardHeader
	Records []Record // Records[i] is ticket Header.FirstTicket+i
}

func corrupt(name string, format string, args ...any) error {
	return fmt.Errorf("shard %s: %w: %s", name, ErrCorrupt, fmt.Sprintf(format, args...))
}

// ReadShardHeader reads and checks the magic and header of a shard stream.
func ReadShardHeader(r io.Reader, name string) (ShardHeader, error) {
	var h ShardHeader
	var pre [12]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return h, corrupt(name, "short header: %v", err)
	}
	if string(pre[:8]) != shardMagic {
		return h, corrupt(name, "not a shake shard file (bad magic)")
	}
	n := binary.LittleEndian.Uint32(pre[8:])
	if n == 0 || n > maxHeaderLen {
		return h, corrupt(name, "header length %d out of range", n)
	}
	hb := make([]byte, n+4)
	if _, err := io.ReadFull(r, hb); err != nil {
		return h, corrupt(name, "short header: %v", err)
	}
	if crc32.Checksum(hb[:n], castagnoli) != binary.LittleEndian.Uint32(hb[n:]) {
		return h, corrupt(name, "header checksum mismatch")
	}
	if err := json.Unmarshal(hb[:n], &h); err != nil {
		return h, corrupt(name, "header: %v", err)
	}
	if err := h.Validate(); err != nil {
		return h, corrupt(name, "header: %v", err)
	}
	return h, nil
}

var decoderPool = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		panic("BUG: zstd decoder: " + err.Error())
	}
	return d
}}

// LoadShard reads, checks and loads a whole shard file. Blocks are decompressed on all
// cores; any corruption fails the load with an error naming the file and block.
func LoadShard(path string) (*Shard, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open shard %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot stat shard %s: %w", path, err)
	}
	return readShard(bufio.NewReaderSize(f, 1<<20), path, st.Size())
}

// MaxShardTickets bounds one shard: 2^28 tickets are 4 GiB resident, more than one edge
// should hold. The bound keeps a damaged or crafted header from asking for terabytes.
const MaxShardTickets = 1 << 28

// minStoredRecordBytes is the least a genuine record takes in the file: its 12-byte MAC is
// random and does not compress. A header that promises more tickets than the file can
// hold is corrupt, and is refused before anything is allocated for it.
const minStoredRecordBytes = 8

type rawBlock struct {
	index   uint32
	records int
	data    []byte
}

// ReadShard is LoadShard on a stream; name is used in errors. When r knows its size
// (bytes.Reader, strings.Reader) the header's count is checked against it.
func ReadShard(r io.Reader, name string) (*Shard, error) {
	size := int64(-1)
	if s, ok := r.(interface{ Size() int64 }); ok {
		size = s.Size()
	}
	return readShard(r, name, size)
}

func readShard(r io.Reader, name string, size int64) (*Shard, error) {
	h, err := ReadShardHeader(r, name)
	if err != nil {
		return nil, err
	}
	maxBlocks := (h.Count + BlockRecords - 1) / BlockRecords
	if h.Count > MaxShardTickets {
		return nil, corrupt(name, "count %d above the limit of %d tickets per shard", h.Count, MaxShardTickets)
	}
	if size >= 0 && h.Count > uint64(size)/minStoredRecordBytes {
		return nil, corrupt(name, "header promises %d tickets, the %d-byte file cannot hold them", h.Count, size)
	}
	sh := &Shard{Header: h, Records: make([]Record, h.Count)}

	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan rawBlock, workers)
	errs := make(chan error, workers+1)
	var wg sync.WaitGroup
	var amount atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := decoderPool.Get().(*zstd.Decoder)
			defer decoderPool.Put(dec)
			buf := make([]byte, 0, recordLen*BlockRecords)
			for b := range jobs {
				var err error
				buf, err = dec.DecodeAll(b.data, buf[:0])
				if err != nil || len(buf) != b.records*recordLen {
					errs <- corrupt(name, "block %d does not decompress to %d records", b.index, b.records)
					for range jobs {
					}
					return
				}
				recs := sh.Records[uint64(b.index)*BlockRecords:][:b.records]
				macs := buf[4*b.records:]
				var sum int64
				for i := range recs {
					a := binary.LittleEndian.Uint32(buf[4*i:])
					recs[i].Amount = a
					sum += int64(a)
					copy(recs[i].MAC[:], macs[MACSize*i:])
				}
				amount.Add(sum)
			}
		}()
	}

	readErr := func() error {
		var hdr [12]byte
		var blocks uint32
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return corrupt(name, "truncated at block %d: %v", blocks, err)
			}
			recs := binary.LittleEndian.Uint32(hdr[0:])
			clen := binary.LittleEndian.Uint32(hdr[4:])
			if recs == 0 && clen == 0 {
				return readTrailer(r, name, hdr[8:], blocks, &h)
			}
			if uint64(blocks) >= maxBlocks || recs == 0 || recs > BlockRecords || clen > 2*recordLen*BlockRecords {
				return corrupt(name, "block %d header out of range", blocks)
			}
			want := uint64(BlockRecords)
			if uint64(blocks) == maxBlocks-1 {
				want = h.Count - uint64(blocks)*BlockRecords
			}
			if uint64(recs) != want {
				return corrupt(name, "block %d holds %d records, expected %d", blocks, recs, want)
			}
			data := make([]byte, clen)
			if _, err := io.ReadFull(r, data); err != nil {
				return corrupt(name, "block %d truncated: %v", blocks, err)
			}
			if blockCRC(blocks, hdr[:8], data) != binary.LittleEndian.Uint32(hdr[8:]) {
				return corrupt(name, "block %d checksum mismatch", blocks)
			}
			select {
			case jobs <- rawBlock{index: blocks, records: int(recs), data: data}:
			case err := <-errs:
				return err
			}
			blocks++
		}
	}()
	close(jobs)
	wg.Wait()
	close(errs)
	if readErr != nil {
		return nil, readErr
	}
	if err := <-errs; err != nil {
		return nil, err
	}
	if got := amount.Load(); got != h.Amount {
		return nil, corrupt(name, "records sum to %d, header says %d", got, h.Amount)
	}
	return sh, nil
}

func readTrailer(r io.Reader, name string, crcPart []byte, blocks uint32, h *ShardHeader) error {
	var t [32]byte
	copy(t[8:12], crcPart)
	if _, err := io.ReadFull(r, t[12:]); err != nil {
		return corrupt(name, "truncated trailer: %v", err)
	}
	if crc32.Checksum(t[:28], castagnoli) != binary.LittleEndian.Uint32(t[28:]) {
		return corrupt(name, "trailer checksum mismatch")
	}
	tb := binary.LittleEndian.Uint32(t[8:])
	tc := binary.LittleEndian.Uint64(t[12:])
	ta := int64(binary.LittleEndian.Uint64(t[20:]))
	if tb != blocks || tc != h.Count || ta != h.Amount {
		return corrupt(name, "trailer says %d blocks / %d tickets / %d, file has %d blocks, header %d / %d", tb, tc, ta, blocks, h.Count, h.Amount)
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n != 0 {
		return corrupt(name, "data after trailer")
	}
	return nil
}
