package swarm

import (
	"sync"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
)

// uploadCounters keeps the piece bytes uploaded per infohash across the
// torrents that come and go for it. The library counts per torrent object
// and forgets at Drop, so each followed torrent is watched: once closed,
// its final count moves to retired. A torrent is followed from its first
// received chunk or its first Stats, whichever comes first; a seed dropped
// before either is in the node total only.
type uploadCounters struct {
	mu       sync.Mutex
	followed map[metainfo.Hash]map[*torrent.Torrent]struct{}
	retired  map[metainfo.Hash]int64
}

func newUploadCounters() *uploadCounters {
	return &uploadCounters{followed: map[metainfo.Hash]map[*torrent.Torrent]struct{}{}, retired: map[metainfo.Hash]int64{}}
}

// follow starts watching t unless it is watched already. It may run with the
// client's lock held, so it reads nothing of t but its infohash.
func (u *uploadCounters) follow(t *torrent.Torrent) {
	ih := t.InfoHash()
	u.mu.Lock()
	defer u.mu.Unlock()
	set := u.followed[ih]
	if _, ok := set[t]; ok {
		return
	}
	if set == nil {
		set = map[*torrent.Torrent]struct{}{}
		u.followed[ih] = set
	}
	set[t] = struct{}{}
	// Ends when t is dropped; closing the client drops every torrent.
	go u.retireAtClose(t, ih)
}

func (u *uploadCounters) retireAtClose(t *torrent.Torrent, ih metainfo.Hash) {
	<-t.Closed()
	st := t.Stats() // nothing is written once closed: the count is final
	final := st.BytesWrittenData.Int64()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.retired[ih] += final
	delete(u.followed[ih], t)
	if len(u.followed[ih]) == 0 {
		delete(u.followed, ih)
	}
}

// of returns the bytes uploaded for t's infohash: what dropped torrents
// sent plus what the followed ones have sent so far. It never counts a
// torrent twice: a count read before its retirement is dropped in favour of
// the final one.
func (u *uploadCounters) of(t *torrent.Torrent) int64 {
	u.follow(t)
	ih := t.InfoHash()
	u.mu.Lock()
	live := make([]*torrent.Torrent, 0, len(u.followed[ih]))
	for lt := range u.followed[ih] {
		live = append(live, lt)
	}
	u.mu.Unlock()
	// The library's lock is taken outside u.mu: record holds it while it
	// calls follow, which takes u.mu.
	counts := make([]int64, len(live))
	for i, lt := range live {
		st := lt.Stats()
		counts[i] = st.BytesWrittenData.Int64()
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	total := u.retired[ih]
	for i, lt := range live {
		if _, ok := u.followed[ih][lt]; ok {
			total += counts[i]
		}
	}
	return total
}
