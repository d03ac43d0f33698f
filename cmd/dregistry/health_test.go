package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type stuckPart struct{ err error }

func (p stuckPart) Stuck() error { return p.err }

func TestHealthzFailsWhileAComponentIsWedged(t *testing.T) {
	cases := []struct {
		name     string
		parts    []staller
		want     int
		wantBody string
	}{
		{"nothing stuck", []staller{stuckPart{}, newHeartbeat("loop", time.Hour)}, http.StatusOK, "ok"},
		{"gossip wedged", []staller{stuckPart{errors.New("tracker: no progress for 31s")}}, http.StatusServiceUnavailable, "no progress for 31s"},
		{"loop without a beat", []staller{stuckPart{}, newHeartbeat("the seeding loop", -time.Second)}, http.StatusServiceUnavailable, "the seeding loop has made no progress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			healthz(tc.parts...).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.want, tc.wantBody)
			}
		})
	}
}

func TestHeartbeatIsStuckOnlyAfterItsLimit(t *testing.T) {
	h := newHeartbeat("loop", 50*time.Millisecond)
	if err := h.Stuck(); err != nil {
		t.Fatalf("fresh heartbeat: %v", err)
	}
	h.last.Store(time.Now().Add(-time.Second).UnixNano())
	if err := h.Stuck(); err == nil {
		t.Fatal("no beat for 1 s with a 50 ms limit is not reported")
	}
	h.beat()
	if err := h.Stuck(); err != nil {
		t.Fatalf("after a beat: %v", err)
	}
}

// readyz reports a wedged component before it touches containerd or the
// tracker, so it answers on a node whose gossip locks are held for good.
func TestReadyzSaysWhyAWedgedNodeIsNotReady(t *testing.T) {
	rec := httptest.NewRecorder()
	readyz(nil, nil, true, stuckPart{}, stuckPart{errors.New("tracker: the gossip delegate has made no progress for 40s")}).
		ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "stuck: tracker: the gossip delegate has made no progress") {
		t.Errorf("got %d %q", rec.Code, rec.Body.String())
	}
}
