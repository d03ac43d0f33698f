package swarm

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
)

// The benchmarks run every node as a child process (this test binary
// re-executed in a role), so CPU time and peak RSS are the node's own.
const benchRoleEnv = "SWARM_BENCH_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(benchRoleEnv) {
	case "":
		os.Exit(m.Run())
	case "seed":
		os.Exit(runBenchSeeder())
	case "get":
		os.Exit(runBenchGetter())
	default:
		fmt.Fprintln(os.Stderr, "unknown role")
		os.Exit(2)
	}
}

// usage is what a child reports about itself when it ends.
type usage struct {
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	TTFB      float64 `json:"ttfb"`
	CPU       float64 `json:"cpu"`
	MaxRSSKiB int64   `json:"maxrss_kib"`
	Err       string  `json:"err,omitempty"`
}

func selfUsage() (cpu float64, maxRSS int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), ru.Maxrss
}

// benchKeys are the cluster keys of the children when SWARM_BENCH_KEYED is
// set (torrent connections authenticated, peer HTTP signed); nil otherwise.
func benchKeys() *peerauth.Keys {
	if os.Getenv("SWARM_BENCH_KEYED") == "" {
		return nil
	}
	k, err := peerauth.New([][]byte{bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		panic(err)
	}
	return k
}

// benchGate admits what a node with keys admits (loopback members when
// keyless).
func benchGate(keys *peerauth.Keys) *peerauth.Gate {
	return &peerauth.Gate{Keys: keys, Member: allowLoopback{}.IsMember}
}

// benchClient signs when the children are keyed.
func benchClient() *http.Client {
	c := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{}}
	if k := benchKeys(); k != nil {
		c.Transport = &peerauth.Transport{Base: c.Transport, Keys: k, Node: "bench"}
	}
	return c
}

type allowLoopback struct{ peers []Peer }

func (a allowLoopback) Seeders(digest.Digest) []Peer { return a.peers }
func (allowLoopback) IsMember(ip netip.Addr) bool    { return ip.IsLoopback() }

// runBenchSeeder seeds the file named by SWARM_BENCH_FILE, prints its peer
// address as JSON, and runs until its stdin closes.
func runBenchSeeder() int {
	ip, path := os.Getenv("SWARM_BENCH_IP"), os.Getenv("SWARM_BENCH_FILE")
	dgst := digest.Digest(os.Getenv("SWARM_BENCH_DIGEST"))
	dir, _ := os.MkdirTemp("", "swarm-bench-seed")
	defer os.RemoveAll(dir)
	keys := benchKeys()
	s, err := New(Config{DataDir: dir, ListenAddr: net.JoinHostPort(ip, "0"), Seeders: allowLoopback{}, Members: allowLoopback{}, Logger: testLogger(nil),
		PeerKeys: keys, Gate: benchGate(keys)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, _ := f.Stat()
	if err := s.Seed(context.Background(), dgst, st.Size(), f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go http.Serve(l, s.PeerHandler())
	stopProfile := startBenchProfile("seed")
	cpu0, _ := selfUsage()
	json.NewEncoder(os.Stdout).Encode(Peer{TorrentAddr: s.TorrentAddr(), HTTPAddr: l.Addr().String()})
	io.Copy(io.Discard, os.Stdin)
	stopProfile()
	cpu, rss := selfUsage()
	json.NewEncoder(os.Stdout).Encode(usage{CPU: cpu - cpu0, MaxRSSKiB: rss})
	return 0
}

// startBenchProfile writes a CPU profile of this child to
// $SWARM_BENCH_CPUPROFILE.<role>.<pid> when that is set (go tool pprof -top);
// it returns the function that ends it.
func startBenchProfile(role string) func() {
	prefix := os.Getenv("SWARM_BENCH_CPUPROFILE")
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%s.%d", prefix, role, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// runBenchGetter downloads the digest once, by torrent or plain HTTP GET,
// and prints its usage.
func runBenchGetter() int {
	ip := os.Getenv("SWARM_BENCH_IP")
	dgst := digest.Digest(os.Getenv("SWARM_BENCH_DIGEST"))
	var peers []Peer
	json.Unmarshal([]byte(os.Getenv("SWARM_BENCH_PEERS")), &peers)
	defer startBenchProfile("get")()
	var u usage
	start := time.Now()
	first := func() {
		if u.TTFB == 0 {
			u.TTFB = time.Since(start).Seconds()
		}
	}
	var err error
	if os.Getenv("SWARM_BENCH_MODE") == "http" {
		u.Bytes, err = benchHTTPGet(peers[0], dgst, first)
	} else {
		u.Bytes, err = benchTorrentGet(ip, peers, dgst, first)
	}
	u.Seconds = time.Since(start).Seconds()
	u.CPU, u.MaxRSSKiB = selfUsage()
	if err != nil {
		u.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(u)
	return 0
}

// benchHTTPGet is the reference: one GET from the seeder's peer endpoint,
// checked against the digest as the swarm checks its blobs.
func benchHTTPGet(p Peer, dgst digest.Digest, first func()) (int64, error) {
	resp, err := benchClient().Get("http://" + p.HTTPAddr + blobPathPrefix + dgst.String())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	d := dgst.Algorithm().Digester()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			first()
			d.Hash().Write(buf[:k])
			n += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	if d.Digest() != dgst {
		return n, errDigestMismatch
	}
	return n, nil
}

func benchTorrentGet(ip string, peers []Peer, dgst digest.Digest, first func()) (int64, error) {
	dir, _ := os.MkdirTemp("", "swarm-bench-get")
	defer os.RemoveAll(dir)
	chunk, _ := strconv.Atoi(os.Getenv("SWARM_BENCH_CHUNK_KIB"))
	readahead, _ := strconv.ParseInt(os.Getenv("SWARM_BENCH_READAHEAD_MIB"), 10, 64)
	keys := benchKeys()
	s, err := New(Config{DataDir: dir, ListenAddr: net.JoinHostPort(ip, "0"), Seeders: allowLoopback{peers: peers}, Members: allowLoopback{}, Logger: testLogger(nil),
		ChunkSize: chunk << 10, Readahead: readahead << 20, PeerKeys: keys, Gate: benchGate(keys), HTTPClient: benchClient()})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	ctx := context.Background()
	b, err := s.Blob(ctx, refForTests(), dgst)
	if err != nil {
		return 0, err
	}
	rc, err := b.Open(ctx, 0)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	// The registry copies a stream to containerd through net/http's 32 KiB
	// buffer; SWARM_BENCH_READ_KIB sets the read size (default 1 MiB).
	readKiB, _ := strconv.Atoi(os.Getenv("SWARM_BENCH_READ_KIB"))
	buf := make([]byte, cmp.Or(readKiB<<10, 1<<20))
	var n int64
	for {
		k, err := rc.Read(buf)
		if k > 0 {
			first()
			n += int64(k)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr *bytes.Buffer
}

func startChild(b *testing.B, env ...string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	return &child{cmd: cmd, stdin: stdin, out: sc, stderr: stderr}
}

func (c *child) decode(b *testing.B, v any) {
	b.Helper()
	if err := c.read(v); err != nil {
		b.Fatal(err)
	}
}

// read decodes the child's next JSON line; safe off the benchmark goroutine.
func (c *child) read(v any) error {
	if !c.out.Scan() {
		c.cmd.Wait()
		return fmt.Errorf("child ended early (%v, %v): %s", c.out.Err(), c.cmd.ProcessState, tail(c.stderr.String(), 4000))
	}
	if err := json.Unmarshal(c.out.Bytes(), v); err != nil {
		return fmt.Errorf("child said %q: %w", c.out.Text(), err)
	}
	return nil
}

// benchBlob writes a blob of size pseudo-random bytes (fast to make, not
// compressible) and returns its path and digest.
func benchBlob(b *testing.B, size int64) (string, digest.Digest) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "blob")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{1})
	d := digest.SHA256.Digester()
	buf := make([]byte, 4<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), left)]
		rng.Read(chunk)
		d.Hash().Write(chunk)
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	return path, d.Digest()
}

func benchSize() int64 {
	if s, err := strconv.ParseInt(os.Getenv("SWARM_BENCH_MIB"), 10, 64); err == nil && s > 0 {
		return s << 20
	}
	return 1 << 30
}

// BenchmarkTransfer moves a 1 GiB blob (SWARM_BENCH_MIB overrides) over
// loopback: plain HTTP GET as the reference, then the swarm 1→1, 3→1 and 1→4.
// Figures are per downloader: MB/s, CPU seconds per GB received (both hash
// checks included), time to first byte, peak RSS.
func BenchmarkTransfer(b *testing.B) {
	size := benchSize()
	path, dgst := benchBlob(b, size)
	for _, sc := range []struct {
		name             string
		seeders, getters int
		mode             string
	}{
		{"http-1to1", 1, 1, "http"},
		{"http-1to4", 1, 4, "http"},
		{"swarm-1to1", 1, 1, "torrent"},
		{"swarm-3to1", 3, 1, "torrent"},
		{"swarm-1to4", 1, 4, "torrent"},
	} {
		b.Run(sc.name, func(b *testing.B) {
			var peers []Peer
			var seeders []*child
			for i := range sc.seeders {
				c := startChild(b, benchRoleEnv+"=seed", "SWARM_BENCH_FILE="+path, "SWARM_BENCH_DIGEST="+dgst.String(), fmt.Sprintf("SWARM_BENCH_IP=127.0.1.%d", i+1))
				var p Peer
				c.decode(b, &p)
				peers = append(peers, p)
				seeders = append(seeders, c)
			}
			peersJSON, _ := json.Marshal(peers)
			var total usage
			var wall float64
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				results := make([]usage, sc.getters)
				var wg sync.WaitGroup
				for g := range sc.getters {
					c := startChild(b, benchRoleEnv+"=get", "SWARM_BENCH_MODE="+sc.mode, "SWARM_BENCH_DIGEST="+dgst.String(),
						"SWARM_BENCH_PEERS="+string(peersJSON), "SWARM_BENCH_IP=127.0.0.1")
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := c.read(&results[g]); err != nil {
							results[g].Err = err.Error()
						}
						c.cmd.Wait()
					}()
				}
				wg.Wait()
				wall += time.Since(start).Seconds()
				for _, u := range results {
					if u.Err != "" || u.Bytes != size {
						b.Fatalf("download: %d bytes, %s", u.Bytes, u.Err)
					}
					total.Seconds += u.Seconds
					total.TTFB += u.TTFB
					total.CPU += u.CPU
					total.MaxRSSKiB = max(total.MaxRSSKiB, u.MaxRSSKiB)
				}
			}
			b.StopTimer()
			var seederCPU float64
			for _, c := range seeders {
				c.stdin.Close()
				var u usage
				c.decode(b, &u)
				c.cmd.Wait()
				seederCPU += u.CPU
			}
			n := float64(b.N * sc.getters)
			gb := float64(size) / 1e9
			b.ReportMetric(float64(size)/1e6/(total.Seconds/n), "MB/s/downloader")
			b.ReportMetric(float64(size)*float64(sc.getters)/1e6/(wall/float64(b.N)), "MB/s-total")
			b.ReportMetric(total.CPU/n/gb, "cpu-s/GB")
			b.ReportMetric(total.TTFB/n*1e3, "ttfb-ms")
			b.ReportMetric(float64(total.MaxRSSKiB)/1024, "peak-rss-MiB")
			b.ReportMetric(seederCPU/float64(b.N)/gb, "seeder-cpu-s/GB")
		})
	}
}

// syntheticBlob is content computed from the offset, so seeding many blobs
// costs no memory for the content itself.
type syntheticBlob struct {
	seed uint64
	size int64
}

func (s syntheticBlob) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	for i := range n {
		x := uint64(off+int64(i)) * (s.seed | 1)
		p[i] = byte(x>>32) ^ byte(x>>8)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s syntheticBlob) digest() digest.Digest {
	d := digest.SHA256.Digester()
	io.Copy(d.Hash(), io.NewSectionReader(s, 0, s.size))
	return d.Digest()
}

// BenchmarkSeededTorrentMemory seeds 1,000 blobs and reports the resident
// memory each seeded torrent adds (content is synthetic, so none of it is
// cached in memory).
func BenchmarkSeededTorrentMemory(b *testing.B) {
	const blobs = 1000
	for range b.N {
		s, err := New(Config{DataDir: b.TempDir(), ListenAddr: "127.0.0.1:0", Seeders: allowLoopback{}, Members: allowLoopback{}, Logger: testLogger(b),
			Gate: benchGate(nil)})
		if err != nil {
			b.Fatal(err)
		}
		contents := make([]syntheticBlob, blobs)
		dgsts := make([]digest.Digest, blobs)
		for i := range contents {
			contents[i] = syntheticBlob{seed: uint64(i) + 7, size: 256<<10 + int64(i)}
			dgsts[i] = contents[i].digest()
		}
		runtime.GC()
		rss0, heap0 := residentBytes(), heapInUse()
		for i, c := range contents {
			if err := s.Seed(context.Background(), dgsts[i], c.size, c); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		b.ReportMetric(float64(residentBytes()-rss0)/blobs/1024, "rss-KiB/torrent")
		b.ReportMetric(float64(heapInUse()-heap0)/blobs/1024, "heap-KiB/torrent")
		s.Close()
	}
}

func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

func residentBytes() int64 {
	raw, _ := os.ReadFile("/proc/self/statm")
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkSmallBlob compares, per blob size, a download through the
// torrent with a whole-blob HTTP fetch from one seeder (in process, on
// loopback); it is the measurement behind Config.SmallBlobSize.
func BenchmarkSmallBlob(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20, 4 << 20, 16 << 20, 32 << 20} {
		for _, path := range []string{"http", "torrent"} {
			b.Run(fmt.Sprintf("%dKiB-%s", size>>10, path), func(b *testing.B) {
				tr := newTracker()
				a := startNode(b, tr, "127.0.3.1", "", nil)
				content, dgst := randomBlob(b, size)
				seed(b, a, tr, content, dgst)
				threshold := int64(1) // everything by torrent
				if path == "http" {
					threshold = 1 << 40
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := range b.N {
					b.StopTimer()
					d := startNode(b, tr, fmt.Sprintf("127.0.3.%d", 2+i%200), "", func(c *Config) { c.SmallBlobSize = threshold })
					b.StartTimer()
					got, err := readBlob(b, d, dgst, 0)
					if err != nil || len(got) != size {
						b.Fatalf("%d bytes: %v", len(got), err)
					}
					b.StopTimer()
					d.stop()
					b.StartTimer()
				}
			})
		}
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }
