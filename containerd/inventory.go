package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
)

// eventFilters select the events that can change what content is held; the
// filters are OR'ed. containerd 1.6/1.7 send no /content/create.
func eventFilters() []string {
	return []string{`topic~="^/images/"`, `topic~="^/content/"`, `topic~="^/namespaces/"`}
}

const (
	// maxEventBatch bounds how many queued events are folded into one walk.
	maxEventBatch = 1024
	// sessionBackoffMin/Max pace resubscribing after containerd went away.
	sessionBackoffMin = 100 * time.Millisecond
	sessionBackoffMax = 5 * time.Second
	// callTimeout bounds each call of the inventory (a walk included), so a
	// containerd that accepts and never answers cannot stall it.
	callTimeout = 2 * time.Minute
)

// ChangeFunc learns digests that became held (added) or are held no more
// (removed) in any chosen namespace.
type ChangeFunc func(added, removed []digest.Digest)

// Inventory is the set of digests containerd holds in the chosen
// namespaces: a digest is held while any namespace has it. Events update it
// early; full resyncs, at start, after every reconnect and periodically,
// make it right (garbage collection sends no event). Only Run changes it.
type Inventory struct {
	store *Store
	log   *slog.Logger

	// notifyMu orders notifications and Subscribe, so a subscriber sees the
	// current set first and then every change, none twice or missed.
	notifyMu    sync.Mutex
	subscribers map[int]ChangeFunc
	nextSub     int

	mu   sync.RWMutex
	byNS map[string]map[digest.Digest]struct{} // namespace → digests
	refs map[digest.Digest]int                 // digest → namespaces holding it

	resyncReq chan chan error
}

// NewInventory returns an empty inventory over store; Run fills it.
func NewInventory(store *Store) *Inventory {
	return &Inventory{
		store:       store,
		log:         store.log.With("component", "inventory"),
		subscribers: map[int]ChangeFunc{},
		byNS:        map[string]map[digest.Digest]struct{}{},
		refs:        map[digest.Digest]int{},
		resyncReq:   make(chan chan error),
	}
}

// Has reports whether a chosen namespace held dgst at the last update. It
// is a hint: check the Store before promising the blob.
func (inv *Inventory) Has(dgst digest.Digest) bool {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.refs[dgst] > 0
}

// Len is the number of digests held.
func (inv *Inventory) Len() int {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return len(inv.refs)
}

// digests returns the digests held, sorted.
func (inv *Inventory) digests() []digest.Digest {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]digest.Digest, 0, len(inv.refs))
	for d := range inv.refs {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// Subscribe calls fn at once with every digest held now (as added), then
// with each change, in order, from Run's goroutine; fn must not block long
// and must not call Subscribe or cancel. cancel stops the calls.
func (inv *Inventory) Subscribe(fn ChangeFunc) (cancel func()) {
	inv.notifyMu.Lock()
	defer inv.notifyMu.Unlock()
	id := inv.nextSub
	inv.nextSub++
	inv.subscribers[id] = fn
	if now := inv.digests(); len(now) > 0 {
		fn(now, nil)
	}
	return func() {
		inv.notifyMu.Lock()
		defer inv.notifyMu.Unlock()
		delete(inv.subscribers, id)
	}
}

// Resync asks Run for a full walk of every chosen namespace and waits for it.
func (inv *Inventory) Resync(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case inv.resyncReq <- done:
	case <-ctx.Done():
		return fmt.Errorf("inventory resync not taken (is Run running?): %w", ctx.Err())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("inventory resync: %w", ctx.Err())
	}
}

// Run keeps the inventory current until ctx ends: it waits for containerd,
// subscribes to events, resyncs fully, and starts over (with backoff) when
// the event stream ends, as it does when containerd restarts.
func (inv *Inventory) Run(ctx context.Context) error {
	bo := newBackoff(sessionBackoffMin, sessionBackoffMax)
	for ctx.Err() == nil {
		err := inv.session(ctx, bo)
		if ctx.Err() != nil {
			break
		}
		inv.log.Warn("containerd watch interrupted; reconnecting", "err", err)
		if !inv.waitAnsweringResync(ctx, bo) {
			break
		}
	}
	return nil
}

// waitAnsweringResync sleeps one backoff step while still answering Resync
// requests, which fail while containerd is away.
func (inv *Inventory) waitAnsweringResync(ctx context.Context, bo *backoff) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slept := make(chan bool, 1)
	go func() { slept <- bo.wait(wctx) }()
	for {
		select {
		case ok := <-slept:
			return ok
		case done := <-inv.resyncReq:
			done <- fmt.Errorf("containerd at %s is not being watched: %w", inv.store.cfg.Address, errdefs.ErrUnavailable)
		}
	}
}

// session is one connection's life: subscribe, resync, then apply events
// and periodic resyncs until the stream or a resync fails.
func (inv *Inventory) session(ctx context.Context, bo *backoff) error {
	pctx, cancelPing := context.WithTimeout(ctx, callTimeout)
	err := inv.store.Ping(pctx)
	cancelPing()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe before walking, so nothing that changes during the walk is lost.
	envelopes, errs := inv.store.client.Subscribe(sctx, eventFilters()...)
	if err := inv.resyncAll(ctx); err != nil {
		return err
	}
	bo.reset()
	ticker := time.NewTicker(inv.store.cfg.ResyncInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			inv.store.observe(errdefs.ErrUnavailable)
			if err == nil {
				err = errors.New("stream closed")
			}
			return fmt.Errorf("containerd event stream ended: %w", err)
		case env := <-envelopes:
			if err := inv.applyEvents(ctx, env, envelopes); err != nil {
				return err
			}
		case <-ticker.C:
			if err := inv.resyncAll(ctx); err != nil {
				return err
			}
		case done := <-inv.resyncReq:
			err := inv.resyncAll(ctx)
			done <- err
			if err != nil {
				return err
			}
		}
	}
}

// applyEvents folds env and the events queued behind it into the set of
// namespaces to walk again, then walks each once.
func (inv *Inventory) applyEvents(ctx context.Context, env *events.Envelope, more <-chan *events.Envelope) error {
	dirty := map[string]bool{}
	var gone []string
	for i := 0; env != nil && i < maxEventBatch; i++ {
		if inv.chosen(env.Namespace) {
			switch env.Topic {
			case "/namespaces/delete":
				gone = append(gone, env.Namespace)
				delete(dirty, env.Namespace)
			case "/content/delete":
				inv.dropFromNamespace(env)
			default:
				dirty[env.Namespace] = true
			}
		}
		select {
		case env = <-more:
		default:
			env = nil
		}
	}
	for _, ns := range gone {
		inv.replaceNamespace(ns, nil)
	}
	for ns := range dirty {
		if err := inv.resyncNamespace(ctx, ns); err != nil {
			return err
		}
	}
	return nil
}

// dropFromNamespace applies a /content/delete: the blob left that namespace.
func (inv *Inventory) dropFromNamespace(env *events.Envelope) {
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		inv.log.Warn("undecodable containerd event", "topic", env.Topic, "err", err)
		return
	}
	ev, ok := v.(*eventtypes.ContentDelete)
	if !ok {
		return
	}
	dgst, err := digest.Parse(ev.Digest)
	if err != nil {
		inv.log.Warn("containerd event with a bad digest", "topic", env.Topic, "digest", ev.Digest, "err", err)
		return
	}
	inv.mu.RLock()
	cur := inv.byNS[env.Namespace]
	_, held := cur[dgst]
	inv.mu.RUnlock()
	if !held {
		return
	}
	next := make(map[digest.Digest]struct{}, len(cur))
	for d := range cur {
		if d != dgst {
			next[d] = struct{}{}
		}
	}
	inv.replaceNamespace(env.Namespace, next)
}

// chosen reports whether ns is one of the configured namespaces.
func (inv *Inventory) chosen(ns string) bool {
	want := inv.store.cfg.Namespaces
	return ns != "" && (len(want) == 0 || slices.Contains(want, ns))
}

// resyncAll walks every chosen namespace and forgets namespaces that are gone.
func (inv *Inventory) resyncAll(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, callTimeout)
	nss, err := inv.store.namespaces(lctx)
	cancel()
	if err != nil {
		return err
	}
	walked := map[string]map[digest.Digest]struct{}{}
	for _, ns := range nss {
		set, err := inv.walk(ctx, ns)
		if err != nil {
			return err
		}
		walked[ns] = set
	}
	inv.mu.RLock()
	var gone []string
	for ns := range inv.byNS {
		if _, ok := walked[ns]; !ok {
			gone = append(gone, ns)
		}
	}
	inv.mu.RUnlock()
	for _, ns := range gone {
		walked[ns] = nil
	}
	inv.apply(walked)
	inv.log.Debug("inventory resynced", "namespaces", len(nss), "digests", inv.Len())
	return nil
}

func (inv *Inventory) resyncNamespace(ctx context.Context, ns string) error {
	set, err := inv.walk(ctx, ns)
	if err != nil {
		return err
	}
	inv.replaceNamespace(ns, set)
	return nil
}

// walk lists the committed content of one namespace; a namespace deleted
// meanwhile holds nothing.
func (inv *Inventory) walk(ctx context.Context, ns string) (map[digest.Digest]struct{}, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	set := map[digest.Digest]struct{}{}
	err := inv.store.client.ContentStore().Walk(namespaces.WithNamespace(ctx, ns), func(info content.Info) error {
		set[info.Digest] = struct{}{}
		return nil
	})
	inv.store.observe(err)
	if errdefs.IsNotFound(err) {
		return map[digest.Digest]struct{}{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("walk content of namespace %s: %w", ns, err)
	}
	return set, nil
}

func (inv *Inventory) replaceNamespace(ns string, set map[digest.Digest]struct{}) {
	inv.apply(map[string]map[digest.Digest]struct{}{ns: set})
}

// apply replaces the sets of the given namespaces (nil drops a namespace)
// and tells subscribers which digests became held or stopped being held.
func (inv *Inventory) apply(sets map[string]map[digest.Digest]struct{}) {
	inv.notifyMu.Lock()
	defer inv.notifyMu.Unlock()

	var added, removed []digest.Digest
	inv.mu.Lock()
	for ns, next := range sets {
		prev := inv.byNS[ns]
		for d := range prev {
			if _, ok := next[d]; ok {
				continue
			}
			if inv.refs[d]--; inv.refs[d] == 0 {
				delete(inv.refs, d)
				removed = append(removed, d)
			}
		}
		for d := range next {
			if _, ok := prev[d]; ok {
				continue
			}
			if inv.refs[d]++; inv.refs[d] == 1 {
				added = append(added, d)
			}
		}
		if next == nil {
			delete(inv.byNS, ns)
		} else {
			inv.byNS[ns] = next
		}
	}
	inv.mu.Unlock()

	// One namespace may drop a digest another adds in the same batch.
	added, removed = netChange(added, removed)
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	slices.Sort(added)
	slices.Sort(removed)
	for _, fn := range inv.subscribers {
		fn(added, removed)
	}
}

// netChange cancels digests that appear in both lists.
func netChange(added, removed []digest.Digest) ([]digest.Digest, []digest.Digest) {
	if len(added) == 0 || len(removed) == 0 {
		return added, removed
	}
	both := map[digest.Digest]bool{}
	for _, d := range added {
		both[d] = true
	}
	var r []digest.Digest
	for _, d := range removed {
		if both[d] {
			delete(both, d)
			continue
		}
		r = append(r, d)
	}
	var a []digest.Digest
	for _, d := range added {
		if _, ok := both[d]; ok {
			a = append(a, d)
		}
	}
	return a, r
}
