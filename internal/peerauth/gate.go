package peerauth

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Gate decides who may use the peer and admin endpoints.
//
// With Keys (a keyed cluster) a request is a member's when it carries a
// valid token; its source address grants nothing. Without Keys (a single
// node, or --insecure-gossip) the old rule stands: the source address is a
// current member's gossip address.
type Gate struct {
	Keys *Keys
	// Member answers for the keyless case; nil admits no one by address.
	Member func(netip.Addr) bool
	// Now is the clock tokens are checked against; default time.Now.
	Now func() time.Time
}

// AdmitPeer admits /peer/v1/… requests: members only, never by being
// local (a second daemon on this host is not a member by being there).
// It answers 403 itself and returns false when refused.
func (g *Gate) AdmitPeer(w http.ResponseWriter, r *http.Request) bool {
	if reason, ok := g.member(r); !ok {
		refuse(w, "not a cluster member: "+reason)
		return false
	}
	return true
}

// AdmitAdmin admits member-only admin requests (/admin/v1/…, the status
// page): from this host (isLocal) without a token, otherwise as AdmitPeer.
func (g *Gate) AdmitAdmin(w http.ResponseWriter, r *http.Request) bool {
	if isLocal(r) {
		return true
	}
	if reason, ok := g.member(r); !ok {
		refuse(w, "only this host and cluster members may ask: "+reason)
		return false
	}
	return true
}

func (g *Gate) member(r *http.Request) (string, bool) {
	if g == nil {
		return "peer endpoints are not configured", false
	}
	if g.Keys != nil {
		now := time.Now
		if g.Now != nil {
			now = g.Now
		}
		if _, err := g.Keys.verifyRequest(r, now()); err != nil {
			return err.Error(), false
		}
		return "", true
	}
	ip, ok := remoteIP(r)
	if ok && g.Member != nil && g.Member(ip) {
		return "", true
	}
	return "source address is not a member's (this cluster runs without a key)", false
}

// refuse answers 403, never 401: a 401 would make containerd send its pull
// credentials.
func refuse(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// isLocal reports whether r comes from this host: from 127.0.0.1 or ::1,
// or from the very address it was sent to (the kernel picks that source
// for a connection to one of its own addresses, and drops packets from
// outside that claim a local source). Other loopback aliases are not
// trusted: several daemons on one host (tests, multi-daemon hosts) each
// own one, and a process binding a member's alias is not that member.
func isLocal(r *http.Request) bool {
	ip, ok := remoteIP(r)
	if !ok {
		return false
	}
	if ip == netip.IPv4Unspecified() {
		return false
	}
	if ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || ip == netip.IPv6Loopback() {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	lap, err := netip.ParseAddrPort(local.String())
	return err == nil && lap.Addr().Unmap() == ip
}

func remoteIP(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}
