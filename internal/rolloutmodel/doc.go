// Package rolloutmodel is a small discrete-time model of one blob's rollout
// to N nodes on capped links (issue 13, benchmark 2). It predicts what the
// link-capped cluster benchmark cannot reach on 2 cores: the rollout time at
// N = 100 and 1,000 for the chunked, pipelined swarm (swarm/doc.go), for today's
// star, and for the warm spread.
//
// The model, in one paragraph: a blob of B bytes is cut into chunks of C
// bytes and pieces of P bytes. Node 0 is the egress owner: it fetches the
// blob from the upstream at min(U, L) and publishes each chunk once its
// bytes are in. Every node has a symmetric link of L bytes/s and at most
// Slots concurrent uploads and Slots concurrent downloads, each moving one
// piece at L/Slots, so one piece takes a round of Slots·P/L and a node's
// link is full when its slots are. Each round, every waiting node (in a
// seeded random order, one piece per node per pass, Slots passes) asks one
// of its peers that has a free upload slot for a piece of its window (as
// the swarm builds it: from the lowest chunk it lacks, as many published
// chunks as it takes for one chunk's pieces to be missing), rarest first by
// the count of holders cluster-wide, then in index order. Under the
// designee rule (Config.Designee, the swarm's since 2026-12-05) a piece
// that among a node's peers only seeders of its chunk hold is asked of
// them by one downloader, the one a hash of node and piece ranks first
// among the chunk's downloaders the asking node is connected to; the
// others take it from that one, or ask a seeder once it is their next
// missing piece and they waited Config.Grace. Beyond Peers + 1 nodes the
// rule has no full view, and the swarm's wide fallback
// (Config.WideFallback) drops it for a per-node scattered order. The swarm
// of 2026-12-05
// (Scattered: four chunks, a per-node scattered order, no designee) is
// kept for comparison.
// A piece received in a round can be uploaded from the next round. A node
// finishes when it holds every piece.
//
// What it leaves out, on purpose: TCP dynamics, latency, CPU, disk, the
// sha256 pass and containerd; a flow always runs at exactly L/Slots (a
// node with one busy slot does not use the rest of its link); rarity is
// the cluster-wide count, not what a node's peers advertised; a node asks
// only a peer with a free upload slot, where the library queues requests
// at a busy seeder too, so the model's seeder sends fewer duplicates than
// the measured one. It never touches the network and holds no state
// between runs.
package rolloutmodel
