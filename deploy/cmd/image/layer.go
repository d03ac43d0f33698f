package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"time"
)

// Paths and identity inside the image.
const (
	binaryPath = "usr/local/bin/dregistry"
	caPath     = "etc/ssl/certs/ca-certificates.crt"
	// nonRootUser is the image's default user. The chart runs the daemon as
	// root (containerd's socket and content store are root's) and says so
	// in its securityContext; anything else gets no privilege by default.
	nonRootUser = "65532:65532"
)

// layerTar is the image's single layer: the binary, the CA bundle and the
// passwd/group entries of the default user. Owners and times are fixed, so
// the same inputs give the same digest.
func layerTar(binary, caBundle string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, content []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	for _, d := range []string{"etc", "tmp", "usr", "usr/local", "usr/local/bin"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := dir(d, mode); err != nil {
			return nil, err
		}
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")); err != nil {
		return nil, err
	}
	if caBundle != "" {
		ca, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		for _, d := range []string{"etc/ssl", "etc/ssl/certs"} {
			if err := dir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := file(caPath, 0o644, ca); err != nil {
			return nil, err
		}
	}
	if err := file(binaryPath, 0o755, bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
