package ops

// SchemaVersion is the version of the Stats JSON; it changes only when a
// field is removed or changes meaning (fields may be added).
const SchemaVersion = 1

// Stats is the answer of GET /admin/v1/stats (see docs/stats-schema.md).
type Stats struct {
	Version  int            `json:"version"`
	Node     string         `json:"node"`
	Members  []MemberStats  `json:"members"`
	Torrents []TorrentStats `json:"torrents"`
	Totals   Totals         `json:"totals"`
	// Peers is the swarm traffic with each peer since start.
	Peers []PeerStats `json:"peers"`
	// Rates is the newest traffic sample (the last 2 s); null until the
	// daemon has taken two samples.
	Rates *TrafficSample `json:"rates"`
	// Preheats are this node's preheats in progress (empty when none).
	Preheats []PreheatStats `json:"preheats"`
}

// PeerStats is the piece bytes exchanged with one peer since start, over
// every torrent.
type PeerStats struct {
	Name       string `json:"name"` // member name, or the IP when no member has it
	Uploaded   int64  `json:"uploadedBytes"`
	Downloaded int64  `json:"downloadedBytes"`
}

// PreheatStats is one preheat running on this node (dregistry swarm
// preheat): the image it fetches into containerd and how far it got.
type PreheatStats struct {
	Image     string `json:"image"`
	Digest    string `json:"digest"`
	Namespace string `json:"namespace"`
	// DoneBytes and TotalBytes count the blobs stored and known so far;
	// TotalBytes grows as manifests are read.
	DoneBytes  int64 `json:"doneBytes"`
	TotalBytes int64 `json:"totalBytes"`
}

// MemberStats is one cluster member as this node's gossip sees it.
type MemberStats struct {
	Name    string   `json:"name"`
	Address string   `json:"address"`
	Roles   []string `json:"roles"`
	State   string   `json:"state"`
}

// TorrentStats is one digest-keyed torrent of this node.
type TorrentStats struct {
	Digest    string  `json:"digest"`
	Size      int64   `json:"size"`
	State     string  `json:"state"` // "seeding" or "downloading"
	Verified  bool    `json:"verified"`
	Completed int64   `json:"completedBytes"`
	Progress  float64 `json:"progress"` // 0..1
	Peers     int     `json:"peers"`
	// ReceivedFrom maps a member name (or the peer IP when no member has
	// it) to the useful piece bytes received from it.
	ReceivedFrom map[string]int64 `json:"receivedFrom"`
	Downloaded   int64            `json:"downloadedBytes"`
	// Uploaded is the piece bytes sent to peers for this digest, kept
	// across the torrents of the digest (download, then seed).
	Uploaded int64 `json:"uploadedBytes"`
}

// Totals sums what this node served and fetched since it started.
type Totals struct {
	ServedBySource map[string]int64 `json:"servedBySource"`
	UpstreamBytes  int64            `json:"upstreamBytes"`
	// UpstreamSaved is bytes served from containerd or the swarm, which
	// would otherwise have come from the upstream.
	UpstreamSaved int64 `json:"upstreamSavedBytes"`
	Downloaded    int64 `json:"swarmDownloadedBytes"`
	// UpstreamFetched is bytes this node fetched from upstream registries.
	UpstreamFetched int64 `json:"upstreamFetchedBytes"`
	// SwarmUploaded and SwarmDownloadedTotal are the piece bytes sent to
	// and usefully received from peers since start, over every torrent.
	SwarmUploaded        int64 `json:"swarmUploadedBytes"`
	SwarmDownloadedTotal int64 `json:"swarmDownloadedTotalBytes"`
	// SwarmWasted is piece bytes received that were not needed (another
	// peer delivered them first); SwarmRequestsStolen counts requests
	// moved from a peer that delivered nothing in time to another.
	SwarmWasted         int64 `json:"swarmWastedBytes"`
	SwarmRequestsStolen int64 `json:"swarmRequestsStolen"`
	// ShareRatio is SwarmUploaded / SwarmDownloadedTotal; null when
	// nothing was downloaded.
	ShareRatio *float64 `json:"shareRatio"`
}
