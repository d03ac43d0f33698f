package ops

import (
	_ "embed"
	"net/http"
)

// statusPage is the status page; it has no external assets and polls the
// admin JSON itself.
//
//go:embed status.html
var statusPage []byte

func serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(statusPage)
}
