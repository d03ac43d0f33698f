// Package peerauth holds the credentials that make a node a member: they
// are derived from the cluster key file (--cluster-key-file), never from a
// source address.
//
// It owns three things, each keyed by its own HMAC-derived key so that no
// credential of one purpose is valid for another:
//   - request tokens for /peer/v1/… and member-only admin requests
//     (Header, Keys.Sign, Transport; Gate verifies them);
//   - a mutual challenge-response run on every torrent connection before
//     the BitTorrent handshake (Keys.NewListener, Dialer);
//   - the rule for who may ask without a token (Gate.AdmitAdmin).
//
// Rotation follows the key file: the first key signs, every key verifies.
// The package never reads files, logs, or calls the network itself.
package peerauth
