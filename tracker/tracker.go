package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/opencontainers/go-digest"
)

// Seeder is a member that announced a digest.
type Seeder struct {
	Node        string
	HTTPAddr    string         // its peer HTTP endpoint, host:port
	TorrentAddr netip.AddrPort // its BitTorrent listener
	Complete    bool           // holds the whole verified blob (else: downloading it)
	Egress      bool
}

// Tracker is this node's membership in the cluster and its view of who
// seeds what. All methods are safe for concurrent use.
type Tracker struct {
	cfg   Config
	log   *slog.Logger
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	meta  []byte

	mu       sync.RWMutex
	idx      *index
	own      inventory
	addrs    memberAddrs
	gossipAt map[string]memberlist.Node // live members' names and gossip addresses (copies)
	live     atomic.Int64               // len(gossipAt), for readers that must not take t.mu
	lost     map[string]lostMember      // members that failed, to contact again (reconnect.go)
	held     map[string]heldView        // views of lost members refused while they counted failed (held.go)
	seen     *seenSet                   // announcements already passed on

	sendQ   chan snapshotTo // members to send our own snapshot to
	stop    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once

	stats counters
	wedge wedgeProbe
}

// New starts memberlist (listening, not yet joined) with this node's
// metadata. Call Join to meet the cluster and Close to leave it.
func New(cfg Config) (*Tracker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	epoch := uint64(time.Now().UnixNano())
	meta, err := nodeMeta{
		Egress: cfg.Egress, Epoch: epoch, HTTPAddr: cfg.PeerHTTPAddr,
		TorrentAddr: cfg.TorrentAddr, Version: cfg.Version,
	}.encode()
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	t := &Tracker{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "tracker"),
		meta:     meta,
		idx:      newIndex(cfg.MaxMembers, cfg.MaxDigestsPerMember),
		own:      inventory{name: cfg.Name, epoch: epoch, have: make(map[sha256Digest]entryState)},
		addrs:    memberAddrs{byName: make(map[string][]netip.Addr), count: make(map[netip.Addr]int)},
		gossipAt: make(map[string]memberlist.Node),
		lost:     make(map[string]lostMember),
		held:     make(map[string]heldView),
		seen:     newSeenSet(seenLimit, seenTTL),
		sendQ:    make(chan snapshotTo, 4096),
		stop:     make(chan struct{}),
	}
	if len(cfg.Keys) == 0 {
		t.log.Warn("gossip is NOT encrypted: any host that reaches the gossip port can join the cluster and announce seeders; set --cluster-key-file")
	}
	mc, err := cfg.memberlistConfig(&delegate{t})
	if err != nil {
		return nil, err
	}
	t.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: cfg.RetransmitMult}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("tracker: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	t.ml = ml
	// Not ml.NumMembers: the queue is read under t.mu's callers' feet and
	// memberlist's node lock must never be waited for from our side.
	t.queue.NumNodes = func() int { return max(1, int(t.live.Load())) }
	t.wg.Add(3)
	go t.sendSnapshots()
	go t.watchWedge()
	go t.reconnect()
	return t, nil
}

// Join meets the cluster through any of addrs (host:port of members),
// retrying with bounded backoff until one answers, ctx ends or
// Config.JoinAttempts are spent. No addrs: this node starts a new cluster.
func (t *Tracker) Join(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	var lastErr error
	wait := t.cfg.JoinBackoff
	for attempt := 1; attempt <= t.cfg.JoinAttempts; attempt++ {
		n, err := t.ml.Join(addrs)
		if n > 0 {
			t.log.Info("joined the cluster", "contacted", n, "members", t.ml.NumMembers())
			t.wg.Add(1)
			go t.catchUp()
			return nil
		}
		lastErr = err
		t.log.Warn("join failed, retrying", "attempt", attempt, "of", t.cfg.JoinAttempts, "wait", wait, "err", err)
		if attempt == t.cfg.JoinAttempts {
			break
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("tracker: join %v: %w (last error: %v)", addrs, context.Cause(ctx), lastErr)
		case <-timer.C:
		}
		wait = min(2*wait, t.cfg.JoinMaxBackoff)
	}
	hint := "if the cluster uses --cluster-key-file, this node needs the same key"
	if len(t.cfg.Keys) > 0 {
		hint = "check that --cluster-key-file holds a key the cluster uses (a wrong key makes every member drop our messages)"
	}
	return &joinError{addrs: addrs, err: lastErr, hint: hint}
}

// joinError says why no member let us in, on one line (memberlist's
// multi-error spans several).
type joinError struct {
	addrs []string
	err   error
	hint  string
}

func (e *joinError) Error() string {
	cause := strings.Join(strings.Fields(strings.ReplaceAll(e.err.Error(), "* ", "")), " ")
	return fmt.Sprintf("tracker: no member in %v accepted the join (%s); %s", e.addrs, cause, e.hint)
}

func (e *joinError) Unwrap() error { return e.err }

// Close leaves the cluster gracefully (members drop our announcements at
// once instead of after failure detection) and stops gossip.
func (t *Tracker) Close() error {
	var err error
	t.closing.Do(func() {
		if lerr := t.ml.Leave(t.cfg.LeaveTimeout); lerr != nil {
			err = fmt.Errorf("tracker: leave: %w", lerr)
		}
		close(t.stop)
		// memberlist sets no deadline on a reliable send: a member that
		// accepted our snapshot and stopped reading must not hang Close.
		done := make(chan struct{})
		go func() { t.wg.Wait(); close(done) }()
		timer := time.NewTimer(t.cfg.LeaveTimeout)
		select {
		case <-done:
		case <-timer.C:
			t.log.Warn("a snapshot send to a member is stuck; closing without it")
		}
		timer.Stop()
		if serr := t.ml.Shutdown(); serr != nil {
			err = errors.Join(err, fmt.Errorf("tracker: shutdown: %w", serr))
		}
	})
	return err
}

// Announce says this node seeds d: complete when it holds the whole
// verified blob, else it is downloading it. A partial announcement of a
// digest already complete changes nothing.
func (t *Tracker) Announce(d digest.Digest, complete bool) error {
	s := statePartial
	if complete {
		s = stateComplete
	}
	return t.change(d, s)
}

// Withdraw says this node no longer has d.
func (t *Tracker) Withdraw(d digest.Digest) error { return t.change(d, stateWithdrawn) }

func (t *Tracker) change(d digest.Digest, s entryState) error {
	raw, err := parseDigest(d)
	if errors.Is(err, errNotSHA256) {
		t.log.Debug("not announced: only sha256 digests are", "digest", d)
		return nil
	}
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err = t.own.change(raw, s)
	t.dropPendingWhileAlone()
	return err
}

// dropPendingWhileAlone forgets changes made while no other member is
// known: whoever we meet later gets our whole inventory as a direct
// snapshot (see NotifyJoin), so broadcasting them too would only make
// every member retransmit a joining node's full inventory. Runs under t.mu,
// so it reads the membership the event delegate recorded (gossipAt) and
// never asks memberlist: memberlist calls that delegate under its node lock
// and the delegate takes t.mu.
func (t *Tracker) dropPendingWhileAlone() {
	if len(t.gossipAt) <= 1 {
		t.own.pending = t.own.pending[:0]
	}
}

// Resync makes the complete announcements exactly the given set (e.g. the
// containerd inventory plus the blobs the swarm completed): new ones are
// announced, missing ones withdrawn. Partial announcements are kept unless
// listed. Valid digests of other algorithms (sha512) are skipped, as
// Announce skips them; nothing changes if a digest is invalid.
func (t *Tracker) Resync(complete []digest.Digest) error {
	want := make(map[sha256Digest]struct{}, len(complete))
	skipped := 0
	for _, d := range complete {
		raw, err := parseDigest(d)
		if errors.Is(err, errNotSHA256) {
			skipped++
			continue
		}
		if err != nil {
			return err
		}
		want[raw] = struct{}{}
	}
	if skipped > 0 {
		t.log.Debug("not announced: only sha256 digests are", "skipped", skipped)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for d, s := range t.own.have {
		if _, ok := want[d]; !ok && s == stateComplete {
			if _, err := t.own.change(d, stateWithdrawn); err != nil {
				return err
			}
		}
	}
	for d := range want {
		if _, err := t.own.change(d, stateComplete); err != nil {
			return err
		}
	}
	t.dropPendingWhileAlone()
	return nil
}

// Lookup returns the live members (this node excluded) that announced d:
// complete seeders first, each class shuffled so load spreads. A digest
// that is not a valid sha256 digest has no seeders.
func (t *Tracker) Lookup(d digest.Digest) []Seeder {
	raw, err := parseDigest(d)
	if err != nil {
		return nil
	}
	var complete, partial []Seeder
	t.mu.RLock()
	for _, r := range t.idx.holdersOf(raw) {
		o := t.idx.origins[r.id()]
		if r.state() == stateWithdrawn || !o.serving() || o.name == t.cfg.Name {
			continue
		}
		s := o.seeder(r.state())
		if s.Complete {
			complete = append(complete, s)
		} else {
			partial = append(partial, s)
		}
	}
	t.mu.RUnlock()
	rand.Shuffle(len(complete), func(i, j int) { complete[i], complete[j] = complete[j], complete[i] })
	rand.Shuffle(len(partial), func(i, j int) { partial[i], partial[j] = partial[j], partial[i] })
	return append(complete, partial...)
}

func (o *origin) serving() bool { return o.alive && o.metaOK }

func (o *origin) seeder(s entryState) Seeder {
	return Seeder{
		Node: o.name, HTTPAddr: o.meta.HTTPAddr, TorrentAddr: o.meta.TorrentAddr,
		Complete: s == stateComplete, Egress: o.meta.Egress,
	}
}

// IsMember reports whether ip is an address of a current member (its
// gossip or torrent address): the swarm's allow-list, checked before the
// cluster-key handshake, and the peer endpoints' rule in a keyless
// cluster only.
func (t *Tracker) IsMember(ip netip.Addr) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.addrs.count[ip.Unmap()] > 0
}

// LocalName is this member's name.
func (t *Tracker) LocalName() string { return t.cfg.Name }

// snapshotTo asks the sender loop for one direct snapshot. node is a copy
// taken under memberlist's lock: memberlist updates the *Node it hands
// out in place, under a lock we cannot take.
type snapshotTo struct {
	node  memberlist.Node
	reply bool // answering a member's snapshot, not greeting a new member
}

// replyWindow: a member we sent our snapshot to this recently needs no
// answer to its own, which is how a greeting and its answer end.
const replyWindow = 10 * time.Second

func (t *Tracker) sendSnapshots() {
	defer t.wg.Done()
	sent := make(map[string]time.Time) // owned by this goroutine
	for {
		select {
		case <-t.stop:
			return
		case req := <-t.sendQ:
			now := time.Now()
			if last, ok := sent[req.node.Name]; req.reply && ok && now.Sub(last) < replyWindow {
				continue
			}
			if t.sendSnapshot(&req.node) {
				sent[req.node.Name] = now
			}
			if len(sent) > 2*int(t.live.Load())+64 {
				for name, at := range sent {
					if now.Sub(at) >= replyWindow {
						delete(sent, name)
					}
				}
			}
		}
	}
}

// sendSnapshot sends our whole inventory straight to a member: one that we
// just saw join (or come back after we thought it failed, so we had
// dropped its announcements), so it knows ours without waiting for
// anti-entropy; or one that just did the same for us, since its greeting
// means it may have dropped ours.
func (t *Tracker) sendSnapshot(node *memberlist.Node) bool {
	name := node.Name
	if !slices.ContainsFunc(t.ml.Members(), func(n *memberlist.Node) bool { return n.Name == name }) {
		return false // gone again
	}
	t.mu.RLock()
	v := t.own.snapshot()
	t.mu.RUnlock()
	msg := appendView(appendHeader(nil, kindState, 1), &v)
	if err := t.ml.SendReliable(node, msg); err != nil {
		t.stats.snapshotsFailed.Add(1)
		t.log.Debug("sending our inventory to a member failed; anti-entropy will repair", "member", name, "err", err)
		return false
	}
	t.stats.snapshotsSent.Add(1)
	return true
}

// counters are read by Stats (and the metrics package through it).
type counters struct {
	received, dropped, stale, rebroadcast   atomic.Uint64
	snapshotsSent, snapshotsFailed, skipped atomic.Uint64
}
