# dregistry — every target installs what it needs (Debian packages through
# apt-get, Go modules through the module proxy).

GO        ?= go
BIN       := bin/dregistry
PKGS      := ./...
# Debian packages the tests and the demo start for real.
DEB_PKGS  := containerd docker-registry skopeo busybox-static iproute2 systemd chromium ca-certificates
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TIMEOUT ?= 25m
# containerd 2.x (with its ctr) and crictl, which Debian does not ship, for
# the CRI e2e tests: built from the Go module proxy once into BUILD_BIN and
# rebuilt only when the binary there reports another version. Static
# (CGO_ENABLED=0, so no C toolchain or -dev package is needed) without the
# btrfs and devmapper snapshotters, which need cgo or are never used here.
BUILD_BIN            := $(CURDIR)/.build/bin
CONTAINERD2_VERSION  := v2.2.9
CRI_TOOLS_VERSION    := v1.37.0
CONTAINERD2_TAGS     := no_btrfs no_devmapper urfave_cli_no_docs

.PHONY: all build test unit bench demo lint deps fmt fuzz soak

all: build

build:
	$(GO) build -trimpath $(if $(wildcard .git),-buildvcs=true) -o $(BIN) ./cmd/dregistry

# deps installs the real components (containerd, the upstream registry and the
# pull clients) when any is missing.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# The Debian packages start their services on a booted host; the tests run their own.
	@$(GO) mod download
	@cd deploy && $(GO) mod download
	@# nice: the build takes minutes of both cores; tests keep their share.
	@if ! "$(BUILD_BIN)/containerd" --version 2>/dev/null | grep -qF ' $(CONTAINERD2_VERSION) ' || \
	    ! "$(BUILD_BIN)/ctr" --version 2>/dev/null | grep -qF ' $(CONTAINERD2_VERSION)'; then \
		echo "building containerd $(CONTAINERD2_VERSION) and ctr into $(BUILD_BIN)"; \
		mkdir -p "$(BUILD_BIN)" && \
		CGO_ENABLED=0 GOBIN="$(BUILD_BIN)" nice $(GO) install -trimpath -tags '$(CONTAINERD2_TAGS)' \
			-ldflags '-X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD2_VERSION)' \
			github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD2_VERSION) \
			github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD2_VERSION); \
	fi
	@if ! "$(BUILD_BIN)/crictl" --version 2>/dev/null | grep -qF ' $(CRI_TOOLS_VERSION)'; then \
		echo "building crictl $(CRI_TOOLS_VERSION) into $(BUILD_BIN)"; \
		mkdir -p "$(BUILD_BIN)" && \
		CGO_ENABLED=0 GOBIN="$(BUILD_BIN)" nice $(GO) install -trimpath \
			-ldflags '-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRI_TOOLS_VERSION)' \
			sigs.k8s.io/cri-tools/cmd/crictl@$(CRI_TOOLS_VERSION); \
	fi

# MODULES are ours (third_party/ is upstream's code, kept as it came).
MODULES := . deploy e2e/conformance

# lint fails when a go.mod or go.sum is not what go mod tidy writes, so
# go.mod says which modules the code imports directly. tidy reads only the
# module cache and the module proxy.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' ':!:third_party/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do \
		if ! out=$$(cd $$m && $(GO) mod tidy -diff 2>&1); then \
			echo "$$m: go.mod/go.sum not tidy (run go mod tidy there):"; echo "$$out"; exit 1; \
		fi; \
	done
	$(GO) vet $(PKGS)
	cd deploy && $(GO) vet ./...
	@# No production function over 80 lines. The test harnesses are not
	@# production.
	$(GO) run ./internal/lint/funclen -skip internal/testenv,registry/sourcetest .

# test runs everything: unit tests, fuzz seeds, and the e2e tests against
# real containerd daemons, a real registry and real pull clients.
test: deps lint fuzz
	DREGISTRY_E2E=required $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@# Hundreds of in-process members are ~10x slower under -race; the scale
	@# test skips itself there and runs here.
	$(GO) test -count=1 -timeout 10m -run Scale ./tracker
	@# Our tests of our changes to the vendored torrent library (third_party/).
	$(GO) test -race -count=1 -timeout 5m -run Dregistry github.com/anacrolix/torrent
	cd deploy && DREGISTRY_E2E=required $(GO) test -race -count=1 ./...

# fuzz runs every committed fuzz target for FUZZTIME each, one at a time (go
# test takes one -fuzz per run); a crash fails it and leaves the input under
# the package's testdata/fuzz/<FuzzName>/ to commit with the fix. Go 1.26's
# fuzz coordinator can report a bare "context deadline exceeded" when
# -fuzztime ends while a worker is mid-input (go.dev/issue/75804, fixed in Go
# 1.27): such a run, with no failing input written, is run once more.
FUZZTIME ?= 10s
fuzz:
	@set -e; for f in $$(git ls-files '*_test.go' | grep -v '^deploy/' | xargs grep -l '^func Fuzz'); do \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz ./$$(dirname $$f) $$name for $(FUZZTIME)"; \
			if ! out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -timeout 5m ./$$(dirname $$f) 2>&1); then \
				echo "$$out"; \
				if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
					echo "fuzz ./$$(dirname $$f) $$name: coordinator deadline flake (go.dev/issue/75804), running it once more"; \
					$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -timeout 5m ./$$(dirname $$f); \
				else exit 1; fi; \
			else echo "$$out" | tail -n 2; fi; \
		done; \
	done

# image builds the container image the chart runs, without a container
# engine: static binaries per platform packed by deploy/cmd/image into an OCI
# layout (IMAGE_LAYOUT); IMAGE_PUSH=registry/repository:tag pushes it too.
IMAGE_VERSION   ?= $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' deploy/helm/dregistry/Chart.yaml)
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_LAYOUT    ?= bin/image
IMAGE_PUSH      ?=
.PHONY: image
image:
	rm -rf $(IMAGE_LAYOUT) bin/image-bin && mkdir -p bin/image-bin
	for p in $(IMAGE_PLATFORMS); do \
		CGO_ENABLED=0 GOOS=$${p%%/*} GOARCH=$${p#*/} $(GO) build -trimpath $(if $(wildcard .git),-buildvcs=true) \
			-o bin/image-bin/dregistry-$${p%%/*}-$${p#*/} ./cmd/dregistry || exit 1; \
	done
	cd deploy && $(GO) run ./cmd/image -version $(IMAGE_VERSION) \
		$(if $(wildcard .git),-revision $(shell git rev-parse HEAD 2>/dev/null)) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(CURDIR)/bin/image-bin/dregistry-$(subst /,-,$(p))) \
		-oci-layout $(CURDIR)/$(IMAGE_LAYOUT) $(if $(IMAGE_PUSH),-push $(IMAGE_PUSH))

# unit runs only the tests that need no root and no daemons.
unit:
	$(GO) test -race -count=1 -short $(PKGS)

# bench prints the figures docs/benchmarks.md records (each package's
# benchmarks say what they measure; the e2e ones start real daemons).
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./swarm ./internal/egress ./tracker ./internal/rolloutmodel
	$(GO) test -run '^$$' -bench . -benchtime 3x -count 1 -timeout 30m ./registry ./containerd
	DREGISTRY_E2E=required $(GO) test -run '^$$' -bench BlobGET -benchtime 3x -count 3 -timeout 30m ./e2e
	DREGISTRY_E2E=required $(GO) test -run '^$$' -bench EgressColdPull -benchtime 1x -count 1 -timeout 30m ./e2e
	DREGISTRY_E2E=required $(GO) test -run '^$$' -bench ColdSingleNode -benchtime 3x -count 1 -timeout 30m ./e2e
	DREGISTRY_E2E=required $(GO) test -run '^$$' -bench Rollout -benchtime 1x -count 1 -timeout 60m ./e2e

# soak runs four nodes with a 96 MiB --cache-size for SOAK (default 10m)
# of non-stop pulls while members are killed and restarted, and writes the
# samples (soak.csv), a chart (soak.png) and the summary table to SOAK_OUT;
# docs/reliability.md records a run. Not part of test. SOAK_TIMEOUT must
# exceed SOAK by the set-up, the warm-up and the settle (about 10 minutes).
SOAK         ?= 10m
SOAK_OUT     ?= $(CURDIR)/docs/soak
SOAK_TIMEOUT ?= 40m
soak: deps
	DREGISTRY_E2E=required DREGISTRY_SOAK=$(SOAK) DREGISTRY_SOAK_OUT=$(SOAK_OUT) \
		$(GO) test -race -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestSoakPullsThroughKillsWithinBounds$$' ./e2e

demo: deps
	DREGISTRY_E2E=required $(GO) test -count=1 -v -run '^TestDemo$$' -timeout 10m ./e2e

fmt:
	gofmt -w $$(git ls-files '*.go')
