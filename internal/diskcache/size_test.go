package diskcache

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"512B", 512},
		{"4KiB", 4 << 10},
		{"512MiB", 512 << 20},
		{"20GiB", 20 << 30},
		{"2TiB", 2 << 40},
		{"1.5GiB", 3 << 29},
		{"100MB", 100e6},
		{"20GB", 20e9},
		{"1KB", 1000},
		{"3TB", 3e12},
		{" 64 MiB ", 64 << 20},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeRejects(t *testing.T) {
	for _, in := range []string{
		"", "MiB", "0", "0GiB", "-1GiB", "12 parsecs", "20gib", "20G", "1e3", "1..5MiB",
		"1.2.3GB", "99999999999TiB", "NaNMiB", "5 MiB extra",
	} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{512 << 20: "512MiB", 20 << 30: "20GiB", 1000: "1000B", 3 << 10: "3KiB"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
		if back, err := ParseSize(FormatSize(in)); err != nil || back != in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", in, back, err)
		}
	}
}
