# gpunode — see README.md. `make run` runs the agent here, `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
BIN      := bin/gpunode-agent
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.revision=$(REVISION)
# go-nvml's cgo declarations trip gcc's deprecation warnings on every build.
export CGO_ENABLED := 1
export CGO_CFLAGS  := -O2 -g -Wno-deprecated-declarations

# make run SIMULATE=dgx-h100-ib   run on a simulated node instead of this machine
# make run ARGS='--log.level=debug'
SIMULATE ?=
ARGS     ?=
# make fuzz FUZZTIME=1m
FUZZTIME ?= 20s

.PHONY: all build build-arm64 run inspect test tools bench fuzz lint deps test-deps clean hwcheck

all: build

deps:
	@scripts/deps.sh

# QEMU and the Debian package lists for the real-kernel tests (test/vm).
test-deps:
	@scripts/deps.sh test

# The first build compiles the cgo dependencies (go-nvml, the verbs and AMD
# SMI shims) and the Kubernetes API types: several minutes cold, seconds
# after that (Go's build cache). Say so, or it looks hung.
build: deps
	@echo "building $(BIN): the first build compiles cgo dependencies and may take minutes; later builds take seconds" >&2
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gpunode-agent

# Grace (GB200/GB300 NVL) nodes run arm64: bin/gpunode-agent-arm64, cgo
# cross-compiled by Debian's aarch64 gcc, which scripts/arm64-toolchain.sh
# downloads and unpacks into ~/.cache/gpunode (44 MB of packages) the first
# time. The image is built per platform instead (Dockerfile).
build-arm64: deps
	@echo "building bin/gpunode-agent-arm64: the first build fetches the cross compiler and compiles the cgo dependencies for arm64; minutes" >&2
	eval "$$(scripts/arm64-toolchain.sh)" && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gpunode-agent-arm64 ./cmd/gpunode-agent

run: build
	$(BIN) run $(if $(SIMULATE),--simulate=$(SIMULATE)) $(ARGS)

inspect: build
	$(BIN) inspect $(if $(SIMULATE),--simulate=$(SIMULATE)) $(ARGS)

# Every test: unit, fuzz seed corpora, golden files, end-to-end on simulated
# nodes and real components as they are added.
test: test-deps lint tools
	$(GO) test -race -count=1 -timeout 30m ./...

# Real components the tests run, built or fetched once per version into the
# cache ($$GPUNODE_CACHE, default ~/.cache/gpunode), outside go test timeouts:
# helm (a few minutes to build), etcd and kube-apiserver (about 6 minutes),
# Prometheus, promtool and node_exporter (Debian packages, unpacked, never
# installed), and the Debian kernel and busybox the VM tests boot (about 70 MB).
tools: test-deps
	@$(GO) run ./test/tools/install helm etcd kube-apiserver prometheus promtool node_exporter vm >/dev/null

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; git ls-files --others --exclude-standard '*.go' 2>/dev/null)); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Includes the agent's scrape against node_exporter's (test/metrics), which
# needs the tools and takes about two minutes.
bench: deps tools
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

# Run every fuzz target for FUZZTIME each (plain `make test` runs their seeds).
fuzz: deps
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# The hardware conformance harness (docs/hardware.md): builds bin/gpunode-agent
# and bin/gpunode-hwcheck, then compares what the agent reports on this machine
# with nvidia-smi, amd-smi, ibv_devinfo and rdma under a GPU load; exits 1 on a
# disagreement. HWCHECK_OUT=dir keeps the report and every raw output. On a
# machine without the tools every row is "not present"; carry bin/ to a GPU
# machine and run scripts/hwcheck-device.sh there.
HWCHECK_OUT ?=
hwcheck: build
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gpunode-hwcheck ./cmd/gpunode-hwcheck
	bin/gpunode-hwcheck --agent=$(BIN) $(if $(HWCHECK_OUT),--out=$(HWCHECK_OUT))

clean:
	rm -rf bin
