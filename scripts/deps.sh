#!/usr/bin/env bash
# Checks (and where possible installs) what building and testing gpunode
# needs on a Debian machine: Go 1.26+, a C compiler for cgo, git.
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

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
