package ops

import "github.com/prometheus/client_golang/prometheus"

// stateCollector reads the tracker and swarm at scrape time.
type stateCollector struct {
	cluster  Cluster
	torrents Torrents
}

// stateDescs are the scrape-time metrics; built per call so the package
// holds no shared values.
type stateDescs struct {
	members, announce, dropped, torrents, peers, down *prometheus.Desc
	swarmUp, swarmDown                                *prometheus.Desc
	announcements, withdrawals                        *prometheus.Desc
	refused                                           *prometheus.Desc
}

func newStateDescs() stateDescs {
	return stateDescs{
		members:   prometheus.NewDesc("dregistry_gossip_members", "Live gossip members, this node included.", nil, nil),
		announce:  prometheus.NewDesc("dregistry_announcements", "Seeder announcements held (member, digest), tombstones included.", nil, nil),
		dropped:   prometheus.NewDesc("dregistry_gossip_dropped_messages_total", "Malformed or oversized gossip messages dropped.", nil, nil),
		torrents:  prometheus.NewDesc("dregistry_active_torrents", "Torrents by state.", []string{"state"}, nil),
		peers:     prometheus.NewDesc("dregistry_connected_peers", "Peer connections summed over torrents.", nil, nil),
		down:      prometheus.NewDesc("dregistry_swarm_downloaded_bytes", "Useful piece bytes received from peers (torrents still held).", nil, nil),
		swarmUp:   prometheus.NewDesc("dregistry_swarm_uploaded_bytes_total", "Piece bytes sent to peers since start, over every torrent.", nil, nil),
		swarmDown: prometheus.NewDesc("dregistry_swarm_downloaded_bytes_total", "Useful piece bytes received from peers since start, over every torrent.", nil, nil),
		announcements: prometheus.NewDesc("dregistry_gossip_announcements_total",
			"Seeder announcements made by this node (sent) and news of others applied to its index (received).", []string{"direction"}, nil),
		withdrawals: prometheus.NewDesc("dregistry_gossip_withdrawals_total",
			"Seeder withdrawals made by this node (sent) and news of others applied to its index (received).", []string{"direction"}, nil),
		refused: prometheus.NewDesc("dregistry_swarm_connections_refused_total",
			"Torrent connections closed before BitTorrent's handshake: from an address that is no member's (not_member), or failing the cluster-key handshake (handshake).", []string{"reason"}, nil),
	}
}

func (d stateDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.members, d.announce, d.dropped, d.torrents, d.peers, d.down, d.swarmUp, d.swarmDown, d.announcements, d.withdrawals, d.refused}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range newStateDescs().all() {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	d := newStateDescs()
	ts := c.cluster.Stats()
	ch <- prometheus.MustNewConstMetric(d.members, prometheus.GaugeValue, float64(ts.Members))
	ch <- prometheus.MustNewConstMetric(d.announce, prometheus.GaugeValue, float64(ts.Announcements))
	ch <- prometheus.MustNewConstMetric(d.dropped, prometheus.CounterValue, float64(ts.Dropped))
	ch <- prometheus.MustNewConstMetric(d.announcements, prometheus.CounterValue, float64(ts.AnnouncementsSent), "sent")
	ch <- prometheus.MustNewConstMetric(d.announcements, prometheus.CounterValue, float64(ts.AnnouncementsReceived), "received")
	ch <- prometheus.MustNewConstMetric(d.withdrawals, prometheus.CounterValue, float64(ts.WithdrawalsSent), "sent")
	ch <- prometheus.MustNewConstMetric(d.withdrawals, prometheus.CounterValue, float64(ts.WithdrawalsReceived), "received")
	sw := c.torrents.Stats()
	var seeding, downloading, peers, down float64
	for _, t := range sw.Torrents {
		if t.Seeding {
			seeding++
		} else {
			downloading++
		}
		peers += float64(t.ConnectedPeers)
		for _, n := range t.ReceivedFrom {
			down += float64(n)
		}
	}
	ch <- prometheus.MustNewConstMetric(d.torrents, prometheus.GaugeValue, seeding, "seeding")
	ch <- prometheus.MustNewConstMetric(d.torrents, prometheus.GaugeValue, downloading, "downloading")
	ch <- prometheus.MustNewConstMetric(d.peers, prometheus.GaugeValue, peers)
	ch <- prometheus.MustNewConstMetric(d.down, prometheus.GaugeValue, down)
	ch <- prometheus.MustNewConstMetric(d.swarmUp, prometheus.CounterValue, float64(sw.UploadedBytes))
	ch <- prometheus.MustNewConstMetric(d.swarmDown, prometheus.CounterValue, float64(sw.DownloadedBytes))
	ch <- prometheus.MustNewConstMetric(d.refused, prometheus.CounterValue, float64(sw.AuthRefused), "not_member")
	ch <- prometheus.MustNewConstMetric(d.refused, prometheus.CounterValue, float64(sw.AuthFailed), "handshake")
}
