package webtorrent

const (
	tracerName        = "anacrolix.torrent.webtorrent"
	webrtcConnTypeKey = "webtorrent.webrtc.conn.type"
)
