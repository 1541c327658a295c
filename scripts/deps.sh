#!/usr/bin/env bash
# Checks (and where possible installs) what building and testing gpunode
# needs on a Debian machine: Go 1.26+, a C compiler for cgo, git; with the
# argument "test" also QEMU for the tests that need a real kernel (test/vm)
# and the package lists they download from. QEMU is a host tool and is
# installed with apt-get; the guest's kernel, busybox and other packages
# are only downloaded (apt-get download) and unpacked into the cache by the
# tests, never installed.
#
#   scripts/deps.sh        what `make build` and `make run` need
#   scripts/deps.sh test   what `make test` needs
# As root it installs missing Debian packages with apt-get; otherwise it
# stops with the exact command to run.
set -euo pipefail

need_go="1.26"
missing=()

if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go is not installed. Install Go ${need_go} or newer from https://go.dev/dl/ and put it on PATH." >&2
  exit 1
fi
have_go=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1)" != "$need_go" ]; then
  echo "deps: Go ${have_go} is too old; gpunode needs Go ${need_go} or newer (https://go.dev/dl/)." >&2
  exit 1
fi

command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v git >/dev/null 2>&1 || missing+=(git)
# rdma/verbs compiles against the verbs headers; the library itself is
# loaded at run time (dlopen), so hosts without rdma-core still run the agent.
[ -e /usr/include/infiniband/verbs.h ] || missing+=(libibverbs-dev)
need_lists=0
if [ "${1:-}" = test ]; then
  command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
  # The VM tests fetch Debian packages; that needs the package lists.
  apt-cache show --no-all-versions busybox-static >/dev/null 2>&1 || need_lists=1
fi

if [ ${#missing[@]} -eq 0 ] && [ $need_lists -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: the Debian package lists are missing; run: sudo apt-get update" >&2
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  fi
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
