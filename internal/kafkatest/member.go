// Package kafkatest drives a classic consumer-group member by hand, request by request
// over one raw TCP connection, so that tests can make a member do exactly what a broken
// or dying client does (park a join and vanish, heartbeat without ever rejoining) and no
// client library hides what the group coordinator does. It is for tests only.
package kafkatest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Request versions are all non-flexible, so a response frame is size, correlation id,
// body: no tagged header fields to skip.
const (
	joinVersion  = 5
	syncVersion  = 3
	hbVersion    = 3
	leaveVersion = 3
)

// SessionTimeout is every member's session timeout: the embedded broker's minimum
// (group.min.session.timeout.ms, 6 s).
const SessionTimeout = 6 * time.Second

// RebalanceTimeout is every member's rebalance timeout.
const RebalanceTimeout = 2 * time.Second

// Conn is one TCP connection to the broker with one request in flight at a time.
type Conn struct {
	c    net.Conn
	f    *kmsg.RequestFormatter
	corr int32
	buf  []byte
}

// Dial connects to addr.
func Dial(addr, clientID string) (*Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID))}, nil
}

// Close closes the connection, as a client that dies does.
func (r *Conn) Close() error { return r.c.Close() }

// Send writes req without waiting for its response.
func (r *Conn) Send(req kmsg.Request) error {
	r.corr++
	r.buf = r.f.AppendRequest(r.buf[:0], req, r.corr)
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.c.Write(r.buf)
	return err
}

// Recv reads the response to the last request sent into resp (whose version must be
// set), waiting at most d.
func (r *Conn) Recv(resp kmsg.Response, d time.Duration) error {
	r.c.SetReadDeadline(time.Now().Add(d))
	var size [4]byte
	if _, err := io.ReadFull(r.c, size[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(size[:])
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

// Do sends req and reads its response into resp.
func (r *Conn) Do(req kmsg.Request, resp kmsg.Response, d time.Duration) error {
	if err := r.Send(req); err != nil {
		return err
	}
	resp.SetVersion(req.GetVersion())
	return r.Recv(resp, d)
}

// Member is a consumer-group member of Group consuming Topic.
type Member struct {
	C        *Conn
	Group    string
	Topic    string
	ID       string
	Gen      int32
	Leader   string
	Members  []string // the generation's members; only the leader is told them
	Assigned []int32  // partitions of Topic this member owns in its generation
}

// JoinRequest is the member's JoinGroup request.
func (m *Member) JoinRequest() *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.SetVersion(joinVersion)
	req.Group = m.Group
	req.MemberID = m.ID
	req.SessionTimeoutMillis = int32(SessionTimeout / time.Millisecond)
	req.RebalanceTimeoutMillis = int32(RebalanceTimeout / time.Millisecond)
	req.ProtocolType = "consumer"
	meta := kmsg.ConsumerMemberMetadata{Topics: []string{m.Topic}}
	req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta.AppendTo(nil)}}
	return req
}

// Join runs JoinGroup until it completes (the first answer to a new member only hands
// out its id), waiting at most d for the rebalance.
func (m *Member) Join(d time.Duration) error {
	for range 2 {
		resp := kmsg.NewPtrJoinGroupResponse()
		if err := m.C.Do(m.JoinRequest(), resp, d); err != nil {
			return err
		}
		if err := m.Joined(resp); !errors.Is(err, kerr.MemberIDRequired) {
			return err
		}
	}
	return errors.New("join: member id required twice")
}

// Joined takes in a JoinGroup answer.
func (m *Member) Joined(resp *kmsg.JoinGroupResponse) error {
	m.ID = resp.MemberID
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	m.Gen, m.Leader = resp.Generation, resp.LeaderID
	m.Members = m.Members[:0]
	for _, gm := range resp.Members {
		m.Members = append(m.Members, gm.MemberID)
	}
	return nil
}

// Park makes a new member ask to join and returns with its second JoinGroup (the one
// with its member id) sent and unanswered: the broker parks it until the group's
// current members rejoin.
func (m *Member) Park() error {
	first := kmsg.NewPtrJoinGroupResponse()
	if err := m.C.Do(m.JoinRequest(), first, 5*time.Second); err != nil {
		return err
	}
	if err := m.Joined(first); !errors.Is(err, kerr.MemberIDRequired) {
		return fmt.Errorf("first join: %v, want MEMBER_ID_REQUIRED", err)
	}
	return m.C.Send(m.JoinRequest())
}

// Parked reads the answer to the join Park sent, waiting at most d.
func (m *Member) Parked(d time.Duration) error {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.SetVersion(joinVersion)
	if err := m.C.Recv(resp, d); err != nil {
		return err
	}
	return m.Joined(resp)
}

// Sync sends SyncGroup; as the leader it spreads partitions 0..parts-1 over the members
// round robin, as the range and round-robin assignors would.
func (m *Member) Sync(parts int32, d time.Duration) error {
	req := kmsg.NewPtrSyncGroupRequest()
	req.SetVersion(syncVersion)
	req.Group, req.MemberID, req.Generation = m.Group, m.ID, m.Gen
	if m.Leader == m.ID {
		per := map[string][]int32{}
		for p := range parts {
			id := m.Members[int(p)%len(m.Members)]
			per[id] = append(per[id], p)
		}
		for _, id := range m.Members {
			a := kmsg.ConsumerMemberAssignment{Topics: []kmsg.ConsumerMemberAssignmentTopic{{Topic: m.Topic, Partitions: per[id]}}}
			req.GroupAssignment = append(req.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: id, MemberAssignment: a.AppendTo(nil)})
		}
	}
	resp := kmsg.NewPtrSyncGroupResponse()
	if err := m.C.Do(req, resp, d); err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err
	}
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(resp.MemberAssignment); err != nil {
		return fmt.Errorf("assignment: %w", err)
	}
	m.Assigned = m.Assigned[:0]
	for _, t := range a.Topics {
		if t.Topic == m.Topic {
			m.Assigned = append(m.Assigned, t.Partitions...)
		}
	}
	return nil
}

// Heartbeat sends one heartbeat and returns the group's error, if any.
func (m *Member) Heartbeat() error {
	req := kmsg.NewPtrHeartbeatRequest()
	req.SetVersion(hbVersion)
	req.Group, req.MemberID, req.Generation = m.Group, m.ID, m.Gen
	resp := kmsg.NewPtrHeartbeatResponse()
	if err := m.C.Do(req, resp, 5*time.Second); err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}

// Leave sends LeaveGroup for member id.
func (m *Member) Leave(id string) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.SetVersion(leaveVersion)
	req.Group = m.Group
	req.Members = []kmsg.LeaveGroupRequestMember{{MemberID: id}}
	resp := kmsg.NewPtrLeaveGroupResponse()
	if err := m.C.Do(req, resp, 5*time.Second); err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}

// Until runs the member as a live consumer would (heartbeat every 200 ms, rejoin and
// resync on any group error) until it owns all parts partitions, or d passes.
func (m *Member) Until(parts int32, d time.Duration) error {
	deadline := time.Now().Add(d)
	joined := false
	for time.Now().Before(deadline) {
		if !joined {
			if err := m.Join(time.Until(deadline)); err != nil {
				return fmt.Errorf("join: %w", err)
			}
			if err := m.Sync(parts, time.Until(deadline)); err != nil {
				if errors.Is(err, kerr.RebalanceInProgress) {
					continue
				}
				return fmt.Errorf("sync: %w", err)
			}
			joined = true
			if len(m.Assigned) == int(parts) {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
		if err := m.Heartbeat(); err != nil {
			joined = false // REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION: rejoin
		}
	}
	return fmt.Errorf("after %v it owns partitions %v of %d; members of its generation %v", d, m.Assigned, parts, m.Members)
}

// JoinSync joins and syncs, waiting at most 10 s for each.
func (m *Member) JoinSync(parts int32) error {
	if err := m.Join(10 * time.Second); err != nil {
		return err
	}
	return m.Sync(parts, 10*time.Second)
}

// Admit adds a new member to a stable group: it parks its join, the others rejoin, and
// everyone syncs.
func Admit(existing []*Member, nc *Member, parts int32) error {
	if err := nc.Park(); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the broker parks the join before the others rejoin
	errs := make(chan error, len(existing)+1)
	for _, m := range existing {
		go func() { errs <- m.JoinSync(parts) }()
	}
	go func() {
		err := nc.Parked(10 * time.Second)
		if err == nil {
			err = nc.Sync(parts, 10*time.Second)
		}
		errs <- err
	}()
	return first(errs, len(existing)+1)
}

// JoinAll joins and syncs every member at once.
func JoinAll(ms []*Member, parts int32) error {
	errs := make(chan error, len(ms))
	for _, m := range ms {
		go func() { errs <- m.JoinSync(parts) }()
	}
	return first(errs, len(ms))
}

// first waits for n results and returns the first error.
func first(errs <-chan error, n int) error {
	var err error
	for range n {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}
