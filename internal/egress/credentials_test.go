package egress

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/dregistry/dregistry/registry/upstream"
)

// A private registry: only the egress node holds the credentials (a docker
// config.json); the plain node pulls through it and no peer request
// carries an Authorization header.
func TestCredentialsStayOnTheEgress(t *testing.T) {
	ctx := testCtx(t)
	up := newTestUpstream(t)
	c := up.content(300<<10, 19)
	secret := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	up.mu.Lock()
	up.basic = secret
	up.mu.Unlock()

	config := filepath.Join(t.TempDir(), "config.json")
	body, _ := json.Marshal(map[string]any{"auths": map[string]any{up.host(): map[string]string{"auth": secret}}})
	if err := os.WriteFile(config, body, 0o600); err != nil {
		t.Fatal(err)
	}
	withCreds, err := upstream.New(upstream.Config{PlainHTTP: []string{up.host()}, DockerConfig: config, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	members := &cluster{}
	owner := newNode(t, "egress", true, withCreds, members, nil)
	plainUpstream := &forbiddenUpstream{}
	plain := newNode(t, "plain", false, plainUpstream, members, nil)
	members.set(owner.member(true), plain.member(false))

	if _, err := up.source().Blob(ctx, c.Ref, c.BlobDigest()); err == nil {
		t.Fatal("the registry serves without credentials; the test proves nothing")
	}
	desc, err := plain.source.Resolve(ctx, c.Ref, c.Tag)
	if err != nil || desc.Digest != c.Manifest.Digest {
		t.Fatalf("resolve: %v %v", desc.Digest, err)
	}
	b, err := plain.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got, err := readAllAt(ctx, b, 0); err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("blob: %d bytes, %v", len(got), err)
	}
	peerAuth := owner.authSeen()
	if len(peerAuth) == 0 {
		t.Fatal("no peer request reached the egress")
	}
	for _, a := range peerAuth {
		if a != "" {
			t.Errorf("a peer request carried Authorization %q", a)
		}
	}
	if plainUpstream.called() != 0 {
		t.Error("the plain node called its upstream")
	}
}
