#!/usr/bin/env bash
# Run the hardware conformance harness on a GPU machine in one command
# (docs/hardware.md): carry bin/ (built here with `make hwcheck`), then on
# the device machine, from the repository root:
#
#   scripts/hwcheck-device.sh
#
# It records the machine (nvidia-smi, driver, glibc, PyTorch/CuPy), then runs
# bin/gpunode-hwcheck: the agent under a ~60 s PyTorch (else CuPy) matmul load,
# compared with nvidia-smi, ibv_devinfo, rdma and amd-smi where present; before
# it, verify's GPU memory registration (gpudirect.txt). The
# table, the JSON and every raw tool output go to $OUT/hwcheck (OUT defaults
# to a new temporary directory). Takes about 90 s; the harness is killed
# after 200 s so a hung driver call cannot use up the machine. Exits with
# the harness's status: 0 all agree, 1 something differs, 2 it could not run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
LOAD=${LOAD:-60s}
mkdir -p "$OUT/hwcheck"

for b in bin/gpunode-agent bin/gpunode-hwcheck; do
  if [ ! -x "$b" ]; then
    echo "$b is missing: run 'make hwcheck' where the code is built and carry bin/" >&2
    exit 2
  fi
done

{
  echo "== date"; date -u
  echo "== uname"; uname -a
  echo "== glibc"; ldd --version 2>&1 | head -1
  echo "== gpunode-agent"; bin/gpunode-agent version
  echo "== nvidia-smi"; nvidia-smi
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m
  echo "== python"; python3 -c 'import sys; print(sys.version)'
  echo "== torch"; python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, torch.cuda.device_count(), "GPUs")'
  echo "== cupy"; python3 -c 'import cupy; print(cupy.__version__)'
} > "$OUT/hwcheck/environment.txt" 2>&1

# GPUDirect RDMA (docs/hardware.md, "CUDA driver calls"): verify registers a
# little of each GPU's memory on its nearest NIC (without one, the CUDA side
# alone runs: allocation and dma-buf export), and a loopback probe on GPU 0.
{
  echo "== verify"; timeout -k 5 60 bin/gpunode-agent verify -o json; echo "== rc $?"
  echo "== probe loopback --memory gpu"; timeout -k 5 60 bin/gpunode-agent probe loopback --memory gpu --gpu 0 --iterations 200 -o json; echo "== rc $?"
} > "$OUT/hwcheck/gpudirect.txt" 2>&1

timeout -k 10 200 bin/gpunode-hwcheck --agent=bin/gpunode-agent --out="$OUT/hwcheck" --load.duration="$LOAD"
rc=$?
echo "gpunode-hwcheck exit status $rc; report and raw outputs in $OUT/hwcheck"
exit $rc
