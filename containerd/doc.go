// Package containerd owns dregistry's view of the node's containerd: content
// reads, the inventory of digests held in every namespace (events plus
// periodic resync, since garbage collection is silent), the hosts.toml
// files that make containerd use dregistry as its mirror, and a preheat's
// fetch of an image through that mirror into containerd (FetchImage).
//
// # Locks and callbacks
//
// containerd itself calls nothing back: events arrive on the client's
// Subscribe channels and are read by Inventory.Run. The package's mutexes:
//
//   - Inventory.notifyMu → Inventory.mu. notifyMu orders the subscribers'
//     calls: ChangeFunc runs on Run's goroutine with notifyMu held (and from
//     Subscribe, under it too), so a ChangeFunc must return at once (record
//     the change, wake its own goroutine), must not call Subscribe, Resync
//     or a cancel func, and must not wait for anything that may be held by
//     a caller of those. Inventory.mu (the sets) is never held while a
//     subscriber runs or containerd is called.
//   - Store.rootMu is held across one introspection call to containerd
//     (bounded by its context) and nothing else.
//   - streamReaderAt.mu is held across a gRPC read of containerd's content;
//     Close takes it too, so a reader's Close waits for its read in flight.
//     Callers close readers on their own goroutine (the daemon closes seeds
//     after a grace period), never under a lock a reader's caller holds.
//
// The rule: never call containerd while holding Inventory.mu, and never
// block in a ChangeFunc.
package containerd
