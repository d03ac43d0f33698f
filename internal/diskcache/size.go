package diskcache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes ParseSize accepts: binary (KiB…TiB) and
// decimal (KB…TB), case-sensitive as written, with B for plain bytes.
var sizeUnits = map[string]int64{
	"":    1,
	"B":   1,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
	"TiB": 1 << 40,
	"KB":  1e3,
	"MB":  1e6,
	"GB":  1e9,
	"TB":  1e12,
}

// ParseSize reads a size such as "512MiB", "20GiB", "1.5GB" or "1048576"
// (bytes). The number may have a fraction; the result is whole bytes
// (rounded down) and must be positive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("size %q: want a number with one of B, KiB, MiB, GiB, TiB, KB, MB, GB, TB (e.g. 512MiB, 20GiB)", s)
	}
	var n int64
	if whole, err := strconv.ParseInt(num, 10, 64); err == nil {
		if whole > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		n = whole * mult
	} else {
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("size %q: %q is not a number", s, num)
		}
		if f*float64(mult) >= math.MaxInt64 {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		n = int64(f * float64(mult))
	}
	if n <= 0 {
		return 0, fmt.Errorf("size %q: must be positive", s)
	}
	return n, nil
}

// FormatSize writes n bytes in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		v    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
