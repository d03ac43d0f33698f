package upstream

import (
	"container/list"
	"net/http"
	"sync"
)

// transportCache keeps the authenticated transports of the most recently
// used repositories; a bearer token is scoped to one repository.
type transportCache struct {
	mu    sync.Mutex
	limit int
	order *list.List // front = most recent; values are *cachedTransport
	byKey map[string]*list.Element
}

type cachedTransport struct {
	key string
	rt  http.RoundTripper
}

func newTransportCache(limit int) *transportCache {
	return &transportCache{limit: limit, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *transportCache) get(key string) (http.RoundTripper, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cachedTransport).rt, true
}

func (c *transportCache) put(key string, rt http.RoundTripper) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		e.Value.(*cachedTransport).rt = rt
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&cachedTransport{key: key, rt: rt})
	for c.order.Len() > c.limit {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*cachedTransport).key)
	}
}

// drop forgets key, so the next request authenticates afresh.
func (c *transportCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.order.Remove(e)
		delete(c.byKey, key)
	}
}

func (c *transportCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
