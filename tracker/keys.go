package tracker

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/memberlist"
)

// LoadKeyFile reads the cluster keys of --cluster-key-file: one base64 key
// (16, 24 or 32 bytes: AES-128/192/256) per line; blank lines and lines
// starting with # are ignored. The first key encrypts, every key decrypts.
//
// Rotation without downtime, one rolling restart per step:
//  1. append the new key as a second line on every node (all still encrypt
//     with the old key, and can now read the new one);
//  2. move the new key to the first line on every node;
//  3. remove the old key on every node.
//
// Generate a key with: head -c 32 /dev/urandom | base64
func LoadKeyFile(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			return nil, fmt.Errorf("cluster key file %s line %d: not base64: %w", path, n, err)
		}
		if err := memberlist.ValidateKey(key); err != nil {
			return nil, fmt.Errorf("cluster key file %s line %d: %w (have %d bytes)", path, n, err, len(key))
		}
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cluster key file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, errors.New("cluster key file " + path + " holds no key")
	}
	return keys, nil
}
