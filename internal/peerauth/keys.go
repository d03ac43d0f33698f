package peerauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
)

// Labels separate the purposes: a key derived for one never verifies the
// other.
const (
	labelHTTP    = "dregistry peer-http v1"
	labelTorrent = "dregistry torrent v1"
)

// Keys are the peer credentials derived from the cluster keys. The first
// cluster key signs; every one verifies (key rotation, tracker.LoadKeyFile).
type Keys struct {
	http, torrent [][]byte
}

// New derives the peer keys from the cluster keys (as read from
// --cluster-key-file), first key first.
func New(clusterKeys [][]byte) (*Keys, error) {
	if len(clusterKeys) == 0 {
		return nil, errors.New("peerauth: no cluster key")
	}
	k := &Keys{}
	for _, ck := range clusterKeys {
		if len(ck) < 16 {
			return nil, errors.New("peerauth: a cluster key is shorter than 16 bytes")
		}
		k.http = append(k.http, derive(ck, labelHTTP))
		k.torrent = append(k.torrent, derive(ck, labelTorrent))
	}
	return k, nil
}

func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// anyKey reports whether mac is the HMAC of msg under one of keys. Every
// key is tried, so the time taken does not tell which one matched.
func anyKey(keys [][]byte, mac []byte, msg ...[]byte) bool {
	ok := false
	for _, k := range keys {
		if hmac.Equal(sum(k, msg...), mac) {
			ok = true
		}
	}
	return ok
}

func sum(key []byte, msg ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, b := range msg {
		m.Write(b)
	}
	return m.Sum(nil)
}
