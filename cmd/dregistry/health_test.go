package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		{"nothing stuck", []staller{stuckPart{}, stuckPart{}}, http.StatusOK, "ok"},
		{"gossip wedged", []staller{stuckPart{errors.New("tracker: no progress for 31s")}}, http.StatusServiceUnavailable, "no progress for 31s"},
		{"loop without a beat", []staller{stuckPart{}, stuckPart{errors.New("the seeding loop has made no progress for 2m1s")}}, http.StatusServiceUnavailable, "the seeding loop has made no progress"},
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
