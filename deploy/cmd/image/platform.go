package main

import (
	"debug/elf"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// elfMachine is the ELF machine of each architecture the image supports.
var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != "linux" {
		return v1.Platform{}, fmt.Errorf("platform %q: want linux/<arch>[/<variant>]", s)
	}
	if _, ok := elfMachine[parts[1]]; !ok {
		return v1.Platform{}, fmt.Errorf("platform %q: architecture %q is not one of amd64, arm64", s, parts[1])
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	} else if p.Architecture == "arm64" {
		p.Variant = "v8" // what containerd's platform matcher normalises arm64 to
	}
	return p, nil
}

// checkBinary refuses a file that is not a static ELF executable for p: a
// dynamically linked binary would find no loader in the image.
func checkBinary(path string, p v1.Platform) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("binary for %s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elfMachine[p.Architecture] {
		return fmt.Errorf("binary %s is for %s, not %s", path, f.Machine, p)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("binary %s is not an executable (%s)", path, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("binary %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}
