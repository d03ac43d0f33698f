package swarm

import (
	"context"
	"log/slog"
	"net"
	"net/netip"

	"github.com/anacrolix/torrent"
)

// libraryLog is the torrent library's log handler: it keeps the library's
// warnings and errors, and its bans. The library bans a peer whose data
// failed a piece hash (alone on the piece, or singled out once the piece
// passed from others) but logs that at info, among chatter the swarm drops;
// a ban is raised to a warning naming the peer's IP, so an operator sees
// which member sent bad data.
type libraryLog struct {
	slog.Handler
}

// Library messages that mean a peer was banned (anacrolix/torrent v1.61:
// Torrent.pieceHashed and Torrent.finishHash).
const (
	libBanAlone = "piece failed hash. banning peer"
	libBanSmart = "smart banned peer"
	// MsgPeerBanned is what the swarm logs when it bans a peer for bad data.
	MsgPeerBanned = "peer banned: its data failed a piece hash"
)

func (h libraryLog) Enabled(ctx context.Context, l slog.Level) bool {
	// Bans come at info; Handle drops every other record below warn.
	return l >= slog.LevelInfo && h.Handler.Enabled(ctx, max(l, slog.LevelWarn))
}

func (h libraryLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	if r.Message != libBanAlone && r.Message != libBanSmart {
		return nil
	}
	ban := slog.NewRecord(r.Time, slog.LevelWarn, MsgPeerBanned, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "peer" {
			a = slog.String("peer", bannedIP(a.Value))
		}
		ban.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, ban)
}

func (h libraryLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return libraryLog{h.Handler.WithAttrs(attrs)}
}

func (h libraryLog) WithGroup(name string) slog.Handler {
	return libraryLog{h.Handler.WithGroup(name)}
}

// bannedIP is the IP of the library's "peer" value: an address for a smart
// ban, a *torrent.Peer (whose default format is a struct dump) otherwise.
func bannedIP(v slog.Value) string {
	switch p := v.Any().(type) {
	case netip.Addr:
		return p.Unmap().String()
	case *torrent.Peer:
		addr := p.RemoteAddr.String()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			return host
		}
		return addr
	}
	return v.String()
}
