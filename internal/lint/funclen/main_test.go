package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckFindsOnlyLongProductionFunctions(t *testing.T) {
	dir := t.TempDir()
	long := "package p\n\nfunc (*T) Long() {\n" + strings.Repeat("\t_ = 1\n", 79) + "}\n\ntype T struct{}\n"
	short := "package p\n\nfunc Short() {\n" + strings.Repeat("\t_ = 1\n", 78) + "}\n"
	files := map[string]string{
		"long.go":            long,
		"short.go":           short,
		"long_test.go":       strings.Replace(long, "Long", "LongTest", 1),
		"harness/h.go":       strings.Replace(long, "Long", "Harness", 1),
		"testdata/x.go":      long,
		"allowed/allowed.go": strings.Replace(long, "Long", "Allowed", 1),
		"third_party/lib.go": long,
	}
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := checker{limit: 80, skip: set(filepath.Join(dir, "harness")), allow: set("T.Allowed")}
	found, err := c.check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || !strings.Contains(found[0], "long.go:3 T.Long (81 lines)") {
		t.Fatalf("found %q, want only T.Long at 81 lines", found)
	}
}
