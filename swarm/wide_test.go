package swarm

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/opencontainers/go-digest"
)

// chunkZero is the torrent of chunk 0 of n's download of dgst, once added.
func chunkZero(n *node, dgst digest.Digest) *torrent.Torrent {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.torrents[dgst]; e != nil && len(e.chunks) > 0 && e.chunks[0] != nil {
		return e.chunks[0].t
	}
	return nil
}

// priorities counts the priorities of t's pieces from 2 on (the stream's
// reader raises the first two).
func priorities(t *torrent.Torrent) map[torrent.PiecePriority]int {
	seen := map[torrent.PiecePriority]int{}
	for i := 2; i < t.NumPieces(); i++ {
		seen[t.PieceState(i).Priority]++
	}
	return seen
}

// A download whose tracker names more peers than a torrent connects to
// (MaxConns) cannot see every downloader, which the designee rule needs:
// it takes pieces in this node's tiers without the rule, from its first
// chunk or from the peer refresh that finds the swarm wide, and for good.
// A narrow one keeps the rule and one priority. The seeders here answer
// metainfo but never send a piece, so the chunk stays as it was wanted.
func TestWideSwarmOrdersPiecesPerNodeWithoutTheDesigneeRule(t *testing.T) {
	content, dgst := randomBlob(t, 4<<20) // one chunk of 16 pieces
	for _, tc := range []struct {
		name     string
		seeders  int // at the start
		later    int // announced after the download started
		maxConns int
		refresh  time.Duration
		wide     bool
	}{
		{"narrow", 2, 0, 2, 100 * time.Millisecond, false},
		{"wide from the start", 3, 0, 2, time.Hour, true}, // no refresh could do it
		{"wide at a refresh", 2, 1, 2, 100 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			release := make(chan struct{})
			defer close(release)
			hung := func(n *node) { seedRaw(t, n, tr, mustHash(t, content, dgst), stallingReaderAt{release: release}) }
			var later []*node
			for i := range tc.seeders + tc.later {
				n := startNode(t, tr, fmt.Sprintf("127.0.0.%d", 20+i), "", nil)
				if i < tc.seeders {
					hung(n)
				} else {
					later = append(later, n)
				}
			}
			d := startNode(t, tr, "127.0.0.10", "", func(c *Config) {
				c.MaxConns, c.PeerRefresh, c.StallTimeout = tc.maxConns, tc.refresh, time.Minute
			})
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			rc, err := openBlobIn(ctx, d, dgst, 0)
			if err != nil {
				t.Fatal(err)
			}
			// The window starts at the stream's first read, which waits
			// for a piece that never comes, until the test ends it.
			read := make(chan struct{})
			go func() { _, _ = rc.Read(make([]byte, 1)); close(read) }()
			defer func() {
				cancel()
				select {
				case <-read:
				case <-time.After(time.Minute):
					t.Error("the read did not end with its context")
				}
				rc.Close()
			}()
			waitFor(t, "chunk 0's torrent", func() bool { return chunkZero(d, dgst) != nil })
			c := chunkZero(d, dgst)
			if len(later) > 0 {
				if !c.DregistryDesignee() {
					t.Fatal("wide before the tracker named more peers than MaxConns")
				}
				for _, n := range later {
					hung(n)
				}
			}
			if tc.wide {
				waitFor(t, "the designee rule off", func() bool { return !c.DregistryDesignee() })
			} else {
				time.Sleep(3 * 100 * time.Millisecond) // three peer refreshes
			}
			seen := priorities(c)
			if !tc.wide {
				if !c.DregistryDesignee() || len(seen) != 1 || seen[torrent.PiecePriorityNormal] == 0 {
					t.Errorf("narrow: designee rule %v, priorities %v; want the rule on, every piece at Normal", c.DregistryDesignee(), seen)
				}
				return
			}
			if len(seen) < 2 {
				t.Errorf("wide: priorities %v, want the node's tiers (several)", seen)
			}
			for p := range seen {
				if !slices.Contains(pieceTiers[:], p) {
					t.Errorf("wide: priority %v is not a tier %v", p, pieceTiers)
				}
			}
		})
	}
}

// Wide, the download still completes and verifies: three downloaders of
// two seeders, each connecting to at most three of its four peers per
// torrent (so at least one seeder), read a blob of several chunks at once.
func TestWideSwarmDownloadsTheBlob(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 5*testChunk+333)
	seed(t, startNode(t, tr, "127.0.0.2", "", chunked()), tr, content, dgst)
	seed(t, startNode(t, tr, "127.0.0.3", "", chunked()), tr, content, dgst)
	var nodes []*node
	for i := range 3 {
		n := startNode(t, tr, fmt.Sprintf("127.0.0.%d", 4+i), "", chunked(func(c *Config) {
			c.MaxConns, c.PeerRefresh = 3, 100*time.Millisecond
		}))
		tr.announcePartial(dgst, n)
		nodes = append(nodes, n)
	}
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			got, err := readBlob(t, n, dgst, 0)
			if err == nil && !bytes.Equal(got, content) {
				err = fmt.Errorf("%s read %d bytes, not the blob", n.ip, len(got))
			}
			errs <- err
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, n := range nodes {
		n.mu.Lock()
		e := n.torrents[dgst]
		wide := e != nil && e.wide
		n.mu.Unlock()
		if !wide {
			t.Errorf("%s: the download is not wide with more peers than MaxConns", n.ip)
		}
	}
}
