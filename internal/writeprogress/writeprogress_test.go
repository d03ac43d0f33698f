package writeprogress

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bodySize = 64 << 20 // far more than loopback's socket buffers hold

// served records how each response of a test server ended.
type served chan error

// bodyHandler writes a large body by Write (streamed) or through
// http.ServeContent over a file (sendfile), and reports how it ended.
func bodyHandler(t *testing.T, done served, viaFile bool) http.Handler {
	var file string
	if viaFile {
		file = filepath.Join(t.TempDir(), "blob")
		b := make([]byte, bodySize)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if viaFile {
			f, err := os.Open(file)
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			cw := &countingWriter{ResponseWriter: w}
			http.ServeContent(cw, r, "", time.Time{}, f)
			if cw.n < bodySize {
				done <- errors.New("cut")
				return
			}
			done <- nil
			return
		}
		w.Header().Set("Content-Length", "67108864")
		buf := make([]byte, 256<<10)
		for sent := 0; sent < bodySize; sent += len(buf) {
			if _, err := w.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	})
}

// countingWriter counts what ServeContent managed to send (it swallows
// write errors).
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	c.n += n
	return n, err
}

// stopReading sends a GET on a raw connection, reads the status line and
// a little of the body, then reads nothing more (the connection stays
// open until the test ends).
func stopReading(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("status line %q: %v", line, err)
	}
}

func TestResponseToAClientThatStopsReadingIsCut(t *testing.T) {
	for _, viaFile := range []bool{false, true} {
		name := map[bool]string{false: "written", true: "sendfile"}[viaFile]
		t.Run(name, func(t *testing.T) {
			done := make(served, 1)
			const timeout = 300 * time.Millisecond
			srv := httptest.NewServer(Handler(bodyHandler(t, done, viaFile), timeout))
			defer srv.Close()
			stopReading(t, srv.Listener.Addr().String())
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("the whole body was sent to a client that stopped reading")
				}
				t.Logf("handler ended: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatalf("the handler still writes 10s after the client stopped reading (timeout %s)", timeout)
			}
		})
	}
}

// Without the wrapper the same client pins the handler: the test above
// measures the wrapper, not the server.
func TestWithoutTheWrapperTheHandlerIsPinned(t *testing.T) {
	done := make(served, 1)
	srv := httptest.NewServer(bodyHandler(t, done, false))
	defer srv.Close()
	stopReading(t, srv.Listener.Addr().String())
	select {
	case err := <-done:
		t.Fatalf("the handler ended (%v) without a write deadline", err)
	case <-time.After(time.Second):
	}
	srv.CloseClientConnections()
	<-done
}

// A slow client that keeps reading gets everything, however long the whole
// body takes, and the next request on the connection (to a handler
// without the wrapper) is not hit by a deadline left behind.
func TestSlowClientKeepsItsResponseAndTheConnection(t *testing.T) {
	for _, viaFile := range []bool{false, true} {
		name := map[bool]string{false: "written", true: "sendfile"}[viaFile]
		t.Run(name, func(t *testing.T) {
			done := make(served, 2)
			const timeout = 400 * time.Millisecond
			mux := http.NewServeMux()
			mux.Handle("/", Handler(bodyHandler(t, done, viaFile), timeout))
			mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			client := &http.Client{Timeout: 60 * time.Second}
			resp, err := client.Get(srv.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			// 64 MiB in 1 MiB reads 10 ms apart: the whole body takes
			// longer than the timeout many times over.
			var got int64
			buf := make([]byte, 1<<20)
			for {
				n, err := io.ReadFull(resp.Body, buf)
				got += int64(n)
				if err != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			resp.Body.Close()
			if got != bodySize {
				t.Fatalf("slow client got %d of %d bytes", got, bodySize)
			}
			if err := <-done; err != nil {
				t.Fatalf("handler: %v", err)
			}
			time.Sleep(2 * timeout) // past any deadline the response left
			resp, err = client.Get(srv.URL + "/plain")
			if err != nil {
				t.Fatalf("next request on the connection: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "ok" {
				t.Fatalf("next request: %q, %v", b, err)
			}
		})
	}
}
