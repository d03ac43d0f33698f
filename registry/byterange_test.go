package registry

import (
	"fmt"
	"hash/fnv"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 100
	whole := byteRange{Kind: rangeWhole, Length: size}
	for _, tc := range []struct {
		header string
		size   int64
		want   byteRange
	}{
		{"", size, whole},
		{"bytes=0-9", size, byteRange{rangePartial, 0, 10}},
		{"bytes=10-", size, byteRange{rangePartial, 10, 90}},
		{"bytes=99-", size, byteRange{rangePartial, 99, 1}},
		{"bytes=90-200", size, byteRange{rangePartial, 90, 10}},
		{"bytes=-10", size, byteRange{rangePartial, 90, 10}},
		{"bytes=-1000", size, byteRange{rangePartial, 0, 100}},
		{"Bytes = 5-5", size, byteRange{rangePartial, 5, 1}},
		{"bytes=100-", size, byteRange{Kind: rangeUnsatisfiable}},
		{"bytes=100-200", size, byteRange{Kind: rangeUnsatisfiable}},
		{"bytes=-0", size, byteRange{Kind: rangeUnsatisfiable}},
		{"bytes=0-", 0, byteRange{Kind: rangeUnsatisfiable}},
		{"bytes=-5", 0, byteRange{Kind: rangeUnsatisfiable}},
		// Ignored: the whole blob, 200.
		{"bytes=0-1,5-6", size, whole},
		{"bytes=9-5", size, whole},
		{"bytes=a-b", size, whole},
		{"bytes=-", size, whole},
		{"bytes=+1-2", size, whole},
		{"bytes=1-+2", size, whole},
		{"bytes 0-1", size, whole},
		{"items=0-1", size, whole},
		{"bytes=0x1-2", size, whole},
		{"bytes=99999999999999999999-", size, whole},
	} {
		if got := parseRange(tc.header, tc.size); got != tc.want {
			t.Errorf("parseRange(%q, %d) = %+v, want %+v", tc.header, tc.size, got, tc.want)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=5-", "bytes=5-1", "bytes=0-1,2-3", "bytes=-0", "x", ""} {
		f.Add(s, int64(100))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			return
		}
		checkValidRangesAccepted(t, header, size)
		got := parseRange(header, size)
		switch got.Kind {
		case rangeWhole:
			if got.Start != 0 || got.Length != size {
				t.Fatalf("whole %+v for size %d", got, size)
			}
		case rangePartial:
			if got.Start < 0 || got.Length <= 0 || got.Start >= size || got.Length > size-got.Start {
				t.Fatalf("partial %+v outside size %d (header %q)", got, size, header)
			}
		case rangeUnsatisfiable:
		default:
			t.Fatalf("unknown kind %d", got.Kind)
		}
	})
}

// checkValidRangesAccepted derives a satisfiable range of a blob of size
// from the fuzz input, writes it in each form a client may send, and
// requires parseRange to answer exactly that range: a parser that refuses
// everything would otherwise pass the fuzzer.
func checkValidRangesAccepted(t *testing.T, seed string, size int64) {
	t.Helper()
	if size <= 0 {
		return
	}
	h := fnv.New64a()
	h.Write([]byte(seed))
	r := h.Sum64()
	start := int64(r % uint64(size))
	length := 1 + int64((r>>17)%uint64(size-start))
	end := start + length - 1
	suffix := 1 + int64((r>>29)%uint64(size))
	for _, tc := range []struct {
		header string
		want   byteRange
	}{
		{fmt.Sprintf("bytes=%d-%d", start, end), byteRange{rangePartial, start, length}},
		{fmt.Sprintf("bytes=%d-", start), byteRange{rangePartial, start, size - start}},
		{fmt.Sprintf("bytes=-%d", suffix), byteRange{rangePartial, size - suffix, suffix}},
		{fmt.Sprintf(" BYTES = %d-%d ", start, end), byteRange{rangePartial, start, length}},
	} {
		if got := parseRange(tc.header, size); got != tc.want {
			t.Fatalf("parseRange(%q, %d) = %+v, want %+v", tc.header, size, got, tc.want)
		}
	}
}
