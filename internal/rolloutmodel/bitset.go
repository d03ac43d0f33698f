package rolloutmodel

// bitset is one node's set of pieces, 64 per word.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) clear(i int)    { b[i/64] &^= 1 << (i % 64) }

// rangeMask is the mask of word w restricted to bits [lo, hi).
func rangeMask(w, lo, hi int) uint64 {
	m := ^uint64(0)
	if base := w * 64; lo > base {
		m &= ^uint64(0) << (lo - base)
	}
	if base := w * 64; hi < base+64 {
		m &= (1 << (hi - base)) - 1
	}
	return m
}
