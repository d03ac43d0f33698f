package registry

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// OCI distribution error codes this API answers with.
const (
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
	codeDenied          = "DENIED"
)

type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type ociErrors struct {
	Errors []ociError `json:"errors"`
}

// writeError sends an OCI error body; HEAD gets the same headers, no body.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	body, err := json.Marshal(ociErrors{Errors: []ociError{{Code: code, Message: message}}})
	if err != nil { // cannot happen for two strings; keep the status anyway
		body = []byte(`{"errors":[]}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Docker-Distribution-API-Version", apiVersion)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
