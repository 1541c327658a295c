#!/usr/bin/env bash
# Prints the environment for cross-compiling gpunode for arm64 (Grace:
# GB200/GB300 nodes) with cgo from an amd64 Debian machine, after making
# sure the cross compiler is there. cgo needs a C compiler for the target
# (go-nvml, the verbs and AMD SMI shims); Debian's gcc-aarch64-linux-gnu is
# downloaded with apt-get download and unpacked with dpkg-deb -x into the
# cache (~/.cache/gpunode/aarch64-gcc), never installed system-wide. The
# verbs headers are the host's /usr/include/infiniband (libibverbs-dev,
# which scripts/deps.sh checks): rdma-core's headers are the same on every
# architecture.
#
#   eval "$(scripts/arm64-toolchain.sh)" && go build ./...
set -euo pipefail

cache="${GPUNODE_CACHE:-$HOME/.cache/gpunode}"
root="$cache/aarch64-gcc"
cc="$root/usr/bin/aarch64-linux-gnu-gcc-12"
# What `apt-get install gcc-aarch64-linux-gnu` pulls in on bookworm.
pkgs=(binutils-aarch64-linux-gnu gcc-12-aarch64-linux-gnu-base cpp-12-aarch64-linux-gnu gcc-12-cross-base
  libc6-arm64-cross libgcc-s1-arm64-cross libgomp1-arm64-cross libitm1-arm64-cross libatomic1-arm64-cross
  libasan8-arm64-cross liblsan0-arm64-cross libtsan2-arm64-cross libstdc++6-arm64-cross libubsan1-arm64-cross
  libhwasan0-arm64-cross libgcc-12-dev-arm64-cross gcc-12-aarch64-linux-gnu linux-libc-dev-arm64-cross
  libc6-dev-arm64-cross)

if [ ! -x "$cc" ]; then
  debs="$cache/debs/arm64-cross"
  mkdir -p "$debs" "$root.tmp"
  (cd "$debs" && apt-get download "${pkgs[@]}" >&2) || {
    echo "arm64-toolchain: apt-get download failed; the package lists may be missing (apt-get update)" >&2
    exit 1
  }
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$root.tmp"; done
  # glibc's linker scripts (libc.so, libm.so) name their parts by absolute
  # path under /usr/aarch64-linux-gnu; point them into the unpacked tree.
  for s in $(grep -l 'GROUP' "$root.tmp"/usr/aarch64-linux-gnu/lib/*.so); do
    sed -i "s|/usr/aarch64-linux-gnu/|$root/usr/aarch64-linux-gnu/|g" "$s"
  done
  rm -rf "$root" && mv "$root.tmp" "$root"
fi
# Debian's cross gcc looks for its sysroot (/usr/aarch64-linux-gnu), cc1
# and the assembler under fixed paths; pointing it at the unpacked tree:
# -B for cc1 and as, --sysroot-like -isystem/-L for the arm64 glibc.
lib="$root/usr/lib/gcc-cross/aarch64-linux-gnu/12"
sys="$root/usr/aarch64-linux-gnu"
flags="-B$root/usr/libexec/gcc-cross/aarch64-linux-gnu/12/ -B$root/usr/bin/aarch64-linux-gnu- -B$lib/ -B$sys/lib/ -isystem $sys/include -L$lib -L$sys/lib"
echo "export GOOS=linux GOARCH=arm64 CGO_ENABLED=1"
# The cross binutils are amd64 programs linked against their own libbfd
# and libopcodes, which the unpacked tree holds outside ld.so's path.
echo "export LD_LIBRARY_PATH='$root/usr/lib/x86_64-linux-gnu'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export CC='$cc $flags'"
# Only the verbs headers come from the host: a directory holding just a
# link to them, so no amd64 glibc header can shadow the arm64 ones.
mkdir -p "$root/host-include"
ln -sfn /usr/include/infiniband "$root/host-include/infiniband"
echo "export CGO_CFLAGS='-O2 -g -Wno-deprecated-declarations -idirafter $root/host-include'"
