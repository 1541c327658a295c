# gpunode-agent image. cgo is required (NVML and verbs are loaded with dlopen
# at run time), so the runtime image carries glibc; it needs no GPU
# libraries of its own (they come from the host or the NVIDIA container
# toolkit), and carries libibverbs for the RDMA probes.
#
# Debian trixie, for its rdma-core 56.1: the verbs providers must know the
# node's NICs, and bookworm's rdma-core 44 predates bnxt_re's support for
# Broadcom Thor2 (BCM5760x, Gen P7: rdma-core 50) among others. AMD
# Pensando's ionic provider needs rdma-core 61, newer than trixie's:
# README "RDMA probes" says what to do there.
#
# Multi-arch (Grace: GB200/GB300 nodes are arm64): build natively per
# platform, `docker buildx build --platform linux/amd64,linux/arm64 .`; both
# golang:1.26-trixie and debian:trixie-slim are multi-arch images, and cgo
# then needs no cross compiler (on an amd64 builder the arm64 stage runs
# under QEMU emulation: slow, but the same build). `make build-arm64`
# cross-compiles the binary alone without Docker.
FROM golang:1.26-trixie AS build
# rdma/verbs compiles against the verbs headers only (the library is dlopened).
RUN apt-get update && apt-get install -y --no-install-recommends libibverbs-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
ENV CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/gpunode-agent ./cmd/gpunode-agent

FROM debian:trixie-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The RDMA probes' user space: libibverbs and its providers (mlx5, bnxt_re,
# irdma, efa, mana, rxe, ...); the kernel side and /dev/infiniband come
# from the node.
RUN apt-get update && apt-get install -y --no-install-recommends libibverbs1 ibverbs-providers \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gpunode-agent /usr/local/bin/gpunode-agent
USER 0:0
ENTRYPOINT ["/usr/local/bin/gpunode-agent"]
CMD ["run", "--host-root=/host"]
