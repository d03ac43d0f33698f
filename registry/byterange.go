package registry

import (
	"strconv"
	"strings"
)

// rangeKind says how to answer a Range header.
type rangeKind int

const (
	// rangeWhole: no Range, or one we ignore (malformed, multi-range); 200.
	rangeWhole rangeKind = iota
	// rangePartial: one satisfiable range; 206.
	rangePartial
	// rangeUnsatisfiable: a valid range outside the blob; 416.
	rangeUnsatisfiable
)

// byteRange is the outcome of ParseRange; Start and Length are meaningful
// for rangePartial only, and then 0 <= Start < Start+Length <= size.
type byteRange struct {
	Kind   rangeKind
	Start  int64
	Length int64
}

// parseRange reads a single "bytes=a-b", "bytes=a-" or "bytes=-n" range for
// a blob of size bytes (RFC 9110 §14.1.2). What it cannot read is ignored
// rather than refused, as RFC 9110 allows: the client gets the whole blob.
func parseRange(header string, size int64) byteRange {
	whole := byteRange{Kind: rangeWhole, Length: size}
	if header == "" || size < 0 {
		return whole
	}
	unit, spec, ok := strings.Cut(header, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return whole
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return whole
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return whole
	}
	if first == "" { // suffix: the last n bytes
		n, ok := parseDecimal(last)
		if !ok {
			return whole
		}
		if n == 0 || size == 0 {
			return byteRange{Kind: rangeUnsatisfiable}
		}
		n = min(n, size)
		return byteRange{Kind: rangePartial, Start: size - n, Length: n}
	}
	start, ok := parseDecimal(first)
	if !ok {
		return whole
	}
	end := size - 1
	if last != "" {
		e, ok := parseDecimal(last)
		if !ok || e < start {
			return whole
		}
		end = min(e, size-1)
	}
	if start >= size {
		return byteRange{Kind: rangeUnsatisfiable}
	}
	return byteRange{Kind: rangePartial, Start: start, Length: end - start + 1}
}

// parseDecimal accepts only ASCII digits (no sign, no spaces) that fit int64.
func parseDecimal(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
