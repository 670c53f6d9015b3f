package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These tests speak the classic consumer-group protocol byte by byte to the embedded
// broker, so that a client can die at an exact moment (with its JoinGroup parked) and
// nothing in a client library hides what the coordinator does. See UPSTREAM.md.

// Request versions below are all non-flexible, so a response frame is size, correlation
// id, body: no tagged header fields to skip.
const (
	joinVersion  = 5
	syncVersion  = 3
	hbVersion    = 3
	leaveVersion = 3
)

// sessionTimeout is the broker's minimum (group.min.session.timeout.ms, 6 s).
const sessionTimeout = 6 * time.Second

// rawConn is one TCP connection to the broker with one request in flight at a time.
type rawConn struct {
	c    net.Conn
	f    *kmsg.RequestFormatter
	corr int32
	buf  []byte
}

func dialRaw(t *testing.T, addr, clientID string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID))}
}

// send writes req without waiting for its response.
func (r *rawConn) send(req kmsg.Request) error {
	r.corr++
	r.buf = r.f.AppendRequest(r.buf[:0], req, r.corr)
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.c.Write(r.buf)
	return err
}

// recv reads the response to the last request sent into resp, waiting at most d.
func (r *rawConn) recv(resp kmsg.Response, d time.Duration) error {
	r.c.SetReadDeadline(time.Now().Add(d))
	var hdr [8]byte
	if _, err := io.ReadFull(r.c, hdr[:4]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 4 || n > 1<<20 {
		return fmt.Errorf("response size %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.c, body); err != nil {
		return err
	}
	if corr := int32(binary.BigEndian.Uint32(body[:4])); corr != r.corr {
		return fmt.Errorf("correlation id %d, want %d", corr, r.corr)
	}
	return resp.ReadFrom(body[4:])
}

func (r *rawConn) do(req kmsg.Request, resp kmsg.Response, d time.Duration) error {
	if err := r.send(req); err != nil {
		return err
	}
	resp.SetVersion(req.GetVersion())
	return r.recv(resp, d)
}

// member is a consumer-group member driven by hand.
type member struct {
	rc       *rawConn
	group    string
	id       string
	gen      int32
	leader   string
	members  []string
	assigned []int32
}

func (m *member) joinReq() *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.SetVersion(joinVersion)
	req.Group = m.group
	req.MemberID = m.id
	req.SessionTimeoutMillis = int32(sessionTimeout / time.Millisecond)
	req.RebalanceTimeoutMillis = 2000
	req.ProtocolType = "consumer"
	meta := kmsg.ConsumerMemberMetadata{Topics: []string{DefaultTopic}}
	req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta.AppendTo(nil)}}
	return req
}

// join runs JoinGroup until it completes (the first answer to a new member only hands
// out its id), waiting at most d for the rebalance.
func (m *member) join(d time.Duration) error {
	for range 2 {
		resp := kmsg.NewPtrJoinGroupResponse()
		if err := m.rc.do(m.joinReq(), resp, d); err != nil {
			return err
		}
		if err := m.joined(resp); !errors.Is(err, kerr.MemberIDRequired) {
			return err
		}
	}
	return errors.New("join: member id required twice")
}

// joined takes in a JoinGroup answer.
func (m *member) joined(resp *kmsg.JoinGroupResponse) error {
	m.id = resp.MemberID
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	m.gen, m.leader = resp.Generation, resp.LeaderID
	m.members = m.members[:0]
	for _, gm := range resp.Members {
		m.members = append(m.members, gm.MemberID)
	}
	return nil
}

// park makes a new member ask to join and returns with its second JoinGroup (the one
// with its member id) sent and unanswered: the broker parks it until the group's
// current members rejoin.
func (m *member) park() error {
	first := kmsg.NewPtrJoinGroupResponse()
	if err := m.rc.do(m.joinReq(), first, 5*time.Second); err != nil {
		return err
	}
	if err := m.joined(first); !errors.Is(err, kerr.MemberIDRequired) {
		return fmt.Errorf("first join: %v, want MEMBER_ID_REQUIRED", err)
	}
	return m.rc.send(m.joinReq())
}

// admit adds a new member to a stable group: it parks its join, the others rejoin, and
// everyone syncs.
func admit(existing []*member, nc *member, parts int32) error {
	if err := nc.park(); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the broker parks the join before the others rejoin
	errs := make(chan error, len(existing)+1)
	for _, m := range existing {
		go func() {
			err := m.join(10 * time.Second)
			if err == nil {
				err = m.sync(parts, 10*time.Second)
			}
			errs <- err
		}()
	}
	go func() {
		resp := kmsg.NewPtrJoinGroupResponse()
		resp.SetVersion(joinVersion)
		err := nc.rc.recv(resp, 10*time.Second)
		if err == nil {
			err = nc.joined(resp)
		}
		if err == nil {
			err = nc.sync(parts, 10*time.Second)
		}
		errs <- err
	}()
	var first error
	for range len(existing) + 1 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// sync sends SyncGroup; as the leader it spreads partitions 0..parts-1 over the
// members round robin, as the range and round-robin assignors would.
func (m *member) sync(parts int32, d time.Duration) error {
	req := kmsg.NewPtrSyncGroupRequest()
	req.SetVersion(syncVersion)
	req.Group, req.MemberID, req.Generation = m.group, m.id, m.gen
	if m.leader == m.id {
		per := map[string][]int32{}
		for p := range parts {
			id := m.members[int(p)%len(m.members)]
			per[id] = append(per[id], p)
		}
		for _, id := range m.members {
			a := kmsg.ConsumerMemberAssignment{Topics: []kmsg.ConsumerMemberAssignmentTopic{{Topic: DefaultTopic, Partitions: per[id]}}}
			req.GroupAssignment = append(req.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: id, MemberAssignment: a.AppendTo(nil)})
		}
	}
	resp := kmsg.NewPtrSyncGroupResponse()
	if err := m.rc.do(req, resp, d); err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(resp.MemberAssignment); err != nil {
		return fmt.Errorf("assignment: %w", err)
	}
	m.assigned = m.assigned[:0]
	for _, t := range a.Topics {
		m.assigned = append(m.assigned, t.Partitions...)
	}
	return nil
}

func (m *member) heartbeat() error {
	req := kmsg.NewPtrHeartbeatRequest()
	req.SetVersion(hbVersion)
	req.Group, req.MemberID, req.Generation = m.group, m.id, m.gen
	resp := kmsg.NewPtrHeartbeatResponse()
	if err := m.rc.do(req, resp, 5*time.Second); err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}

// until runs the member as a live consumer would (heartbeat every 200 ms, rejoin and
// resync on any group error) until it owns all parts partitions, or d passes.
func (m *member) until(parts int32, d time.Duration) error {
	deadline := time.Now().Add(d)
	joined := false
	for time.Now().Before(deadline) {
		if !joined {
			if err := m.join(time.Until(deadline)); err != nil {
				return fmt.Errorf("join: %w", err)
			}
			if err := m.sync(parts, time.Until(deadline)); err != nil {
				if errors.Is(err, kerr.RebalanceInProgress) {
					continue
				}
				return fmt.Errorf("sync: %w", err)
			}
			joined = true
			if len(m.assigned) == int(parts) {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
		if err := m.heartbeat(); err != nil {
			joined = false // RebalanceInProgress, UnknownMemberID, IllegalGeneration: rejoin
		}
	}
	return fmt.Errorf("after %v it owns partitions %v of %d; members of its generation %v", d, m.assigned, parts, m.members)
}

// TestDeadJoinerLosesItsPartitions: a member whose client dies while its JoinGroup is
// parked (waiting for the others to rejoin) must not keep partitions in the next
// generation for longer than its session timeout. Before the fix, about half the time
// kfake dropped the join answer it could not deliver without starting the member's
// session timer, so the dead member held its share in a Stable group for ever and the
// live member, whose heartbeats kept succeeding, never got it back (chaos seed 777: a
// settler killed while its restarted self was rejoining). Many groups run at once, so
// the old behaviour fails this test with a probability of about 1 - 2^-10.
func TestDeadJoinerLosesItsPartitions(t *testing.T) {
	const parts, groups = 4, 10
	b, err := Start(Config{Listen: "127.0.0.1:0", Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The dead member's session timeout, the live member's rejoin and some slack for a
	// loaded machine.
	const bound = sessionTimeout + 6*time.Second
	var wg sync.WaitGroup
	errs := make([]error, groups)
	for i := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = deadJoiner(t, b.Addr(), fmt.Sprintf("dead-joiner-%d", i), parts, bound)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("group %d: live member: %v", i, err)
		}
	}
}

func deadJoiner(t *testing.T, addr, group string, parts int32, bound time.Duration) error {
	live := &member{rc: dialRaw(t, addr, "live"), group: group}
	if err := live.until(parts, 10*time.Second); err != nil {
		return fmt.Errorf("alone: %w", err)
	}
	// A second member joins; its join is parked until the live member rejoins. Its
	// client dies right there, before the rebalance completes.
	dead := &member{rc: dialRaw(t, addr, "dead"), group: group}
	if err := dead.park(); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the broker parks the join
	dead.rc.c.Close()
	time.Sleep(300 * time.Millisecond) // the broker sees the connection close
	// The live member learns of the rebalance, rejoins with the dead one still listed,
	// and must own every partition again within the bound.
	if err := live.heartbeat(); !errors.Is(err, kerr.RebalanceInProgress) {
		return fmt.Errorf("heartbeat during the rebalance: %v, want REBALANCE_IN_PROGRESS", err)
	}
	start := time.Now()
	if err := live.until(parts, bound); err != nil {
		return err
	}
	t.Logf("%s: live member owns all %d partitions %v after the dead joiner", group, parts, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// TestOneLeaderAfterTheLeaderLeaves: when the leader leaves, the next generation has one
// leader and every member is told the same one. kfake told every member it was the
// leader (each join answer named its own member), so all of them ran the assignor.
func TestOneLeaderAfterTheLeaderLeaves(t *testing.T) {
	const parts = 4
	b, err := Start(Config{Listen: "127.0.0.1:0", Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const group = "leader-leaves"
	ms := make([]*member, 3)
	for i := range ms {
		ms[i] = &member{rc: dialRaw(t, b.Addr(), fmt.Sprint("m", i)), group: group}
	}
	// The first member leads; the others join one after the other.
	if err := ms[0].until(parts, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ms); i++ {
		if err := admit(ms[:i], ms[i], parts); err != nil {
			t.Fatalf("admitting member %d: %v", i, err)
		}
	}
	var leader *member
	var rest []*member
	for _, m := range ms {
		if m.leader == m.id {
			leader = m
		} else {
			rest = append(rest, m)
		}
	}
	if leader == nil || len(rest) != 2 {
		t.Fatalf("first generation: %d members lead", len(ms)-len(rest))
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.SetVersion(leaveVersion)
	leave.Group = group
	leave.Members = []kmsg.LeaveGroupRequestMember{{MemberID: leader.id}}
	if err := leader.rc.do(leave, kmsg.NewPtrLeaveGroupResponse(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, m := range rest {
		if err := m.heartbeat(); !errors.Is(err, kerr.RebalanceInProgress) {
			t.Fatalf("heartbeat after the leader left: %v", err)
		}
	}
	if err := joinAll(rest, parts); err != nil {
		t.Fatal(err)
	}
	if rest[0].leader != rest[1].leader || rest[0].leader == leader.id ||
		(rest[0].leader != rest[0].id && rest[0].leader != rest[1].id) {
		t.Fatalf("second generation: %s was told the leader is %s, %s was told %s (old leader %s)",
			rest[0].id, rest[0].leader, rest[1].id, rest[1].leader, leader.id)
	}
	if got := len(rest[0].assigned) + len(rest[1].assigned); got != parts {
		t.Fatalf("second generation assigns %d partitions, want %d", got, parts)
	}
}

// joinAll joins and syncs every member concurrently.
func joinAll(ms []*member, parts int32) error {
	errs := make(chan error, len(ms))
	for _, m := range ms {
		go func() {
			err := m.join(10 * time.Second)
			if err == nil {
				err = m.sync(parts, 10*time.Second)
			}
			errs <- err
		}()
	}
	var first error
	for range ms {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
