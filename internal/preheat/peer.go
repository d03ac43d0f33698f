package preheat

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/writeprogress"
)

// PeerPath is the member endpoint: POST a Request, read Status lines.
const PeerPath = "/peer/v1/preheat"

// reportInterval is how often a stream repeats a node's Status while it
// runs: the reader takes silence for StallTimeout as a dead node, and the
// writer cuts a stream its reader has not taken for StallTimeout.
const (
	reportInterval = time.Second
	StallTimeout   = 30 * time.Second
)

// PeerHandler serves PeerPath to members only (gate.AdmitPeer): a
// request starts or joins the preheat, then streams its Status every
// reportInterval until it ends. A caller that leaves does not stop it; one
// that stops reading loses its stream after StallTimeout
// (writeprogress), so it pins no goroutine.
func (r *Runner) PeerHandler(gate *peerauth.Gate) http.Handler {
	return writeprogress.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !gate.AdmitPeer(w, req) {
			return
		}
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			jsonError(w, http.StatusMethodNotAllowed, "method not allowed: POST a preheat request")
			return
		}
		pr, err := parseRequest(req.Body)
		if err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
		job, joined := r.Start(pr)
		if joined {
			r.cfg.Logger.Info("preheat joined", "image", pr.Image, "digest", pr.Digest, "namespace", pr.Namespace)
		}
		stream(w, req, job, r.cfg.Node)
	}), StallTimeout)
}

// stream writes job's Status lines until it ends or the caller leaves.
func stream(w http.ResponseWriter, req *http.Request, job *Job, node string) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	tick := time.NewTicker(reportInterval)
	defer tick.Stop()
	for {
		s := job.Status(node)
		if enc.Encode(s) != nil || rc.Flush() != nil || s.State != StateRunning {
			return
		}
		select {
		case <-req.Context().Done():
			return
		case <-job.Finished():
		case <-tick.C:
		}
	}
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}
