package containerd

import "github.com/dregistry/dregistry/registry"

// The registry's local source is built on a Store.
var _ registry.ContentStore = (*Store)(nil)
