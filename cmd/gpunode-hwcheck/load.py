# GPU load for gpunode-hwcheck: bf16/fp16 matmuls on every GPU for the given
# seconds, with 4 GiB held per GPU so memory used moves too. Exits 3 when
# neither PyTorch nor CuPy can be imported (the harness then compares idle
# readings only).
import sys
import time

secs = float(sys.argv[1])
N = 8192
HOLD = 4 << 30


def run_torch():
    import torch

    n = torch.cuda.device_count()
    work = []
    for i in range(n):
        dev = torch.device("cuda", i)
        a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
        b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
        hold = torch.empty(HOLD, dtype=torch.uint8, device=dev)
        work.append((a, b, hold))
    print(f"load: PyTorch {torch.__version__} on {n} GPUs", flush=True)
    end = time.time() + secs
    while time.time() < end:
        for a, b, _ in work:
            for _ in range(8):
                torch.matmul(a, b)
        for i in range(n):
            torch.cuda.synchronize(i)


def run_cupy():
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    work = []
    for i in range(n):
        with cupy.cuda.Device(i):
            a = cupy.random.random((N, N), dtype=cupy.float32).astype(cupy.float16)
            b = cupy.random.random((N, N), dtype=cupy.float32).astype(cupy.float16)
            hold = cupy.empty(HOLD, dtype=cupy.uint8)
            work.append((i, a, b, hold))
    print(f"load: CuPy {cupy.__version__} on {n} GPUs", flush=True)
    end = time.time() + secs
    while time.time() < end:
        for i, a, b, _ in work:
            with cupy.cuda.Device(i):
                for _ in range(8):
                    cupy.matmul(a, b)
        for i, *_ in work:
            cupy.cuda.Device(i).synchronize()


try:
    import torch  # noqa: F401

    have_torch = True
except ImportError:
    have_torch = False
if have_torch:
    run_torch()
    sys.exit(0)
try:
    import cupy  # noqa: F401
except ImportError:
    print("load: neither PyTorch nor CuPy can be imported", file=sys.stderr)
    sys.exit(3)
run_cupy()
