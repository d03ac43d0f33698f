package upstream

import (
	"fmt"
	"os"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/dregistry/dregistry/registry/oci"
)

// fileKeychain reads pull credentials from one docker config.json, named by
// the operator, never from $HOME or $DOCKER_CONFIG of the daemon.
type fileKeychain struct {
	cf *configfile.ConfigFile
}

// keychain also lists the registries it holds credentials for: those are
// named by the operator, so they may be fetched from.
type keychain interface {
	authn.Keychain
	registries() ([]string, error)
}

func loadKeychain(path string) (keychain, error) {
	if path == "" {
		return anonymousKeychain{}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	cf.Filename = path
	return fileKeychain{cf: cf}, nil
}

// registries are the hosts of the config's auths and credHelpers keys,
// which may be URLs ("https://index.docker.io/v1/").
func (k fileKeychain) registries() ([]string, error) {
	var out []string
	keys := make([]string, 0, len(k.cf.AuthConfigs)+len(k.cf.CredentialHelpers))
	for key := range k.cf.AuthConfigs {
		keys = append(keys, key)
	}
	for key := range k.cf.CredentialHelpers {
		keys = append(keys, key)
	}
	for _, key := range keys {
		host := key
		if i := strings.Index(host, "://"); i >= 0 {
			host = host[i+3:]
		}
		host, _, _ = strings.Cut(host, "/")
		reg, err := oci.ParseRegistry(host, "")
		if err != nil {
			return nil, fmt.Errorf("docker config %s: credentials for %q: %w", k.cf.Filename, key, err)
		}
		out = append(out, reg)
	}
	return out, nil
}

// Resolve looks up the repository, then the registry, the way docker does;
// Docker Hub's credentials live under its historical v1 URL.
func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	var empty types.AuthConfig
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := k.cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", key, err)
		}
		cfg.ServerAddress = "" // set by GetAuthConfig; not a credential
		if cfg != empty {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}

type anonymousKeychain struct{}

func (anonymousKeychain) registries() ([]string, error) { return nil, nil }

func (anonymousKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.Anonymous, nil
}
