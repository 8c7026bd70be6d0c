"""Each kernel of benchmarks/gpu.py's list launched once, for a profiler to look inside:

    ncu -k regex:^gp_ --section SpeedOfLight --section MemoryWorkloadAnalysis \\
        python benchmarks/profile_kernels.py

benchmarks/gpu.py says how fast each kernel is; Nsight Compute says why (memory or instruction
bound, achieved occupancy, sectors per request). Four 12 MP RGB images keep the replays short.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import KERNEL_OPS  # noqa: E402


def main() -> int:
    import cupy

    from gpupipe.backends.cuda.backend import CupyBackend
    backend = CupyBackend()
    rng = np.random.default_rng(0)
    batch = backend.upload([rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8) for _ in range(4)])
    for op in KERNEL_OPS:
        backend.settled(backend.apply(batch, op))      # brightness/contrast launch when settled
        cupy.cuda.Device().synchronize()
        print(f"launched {op!r}", flush=True)
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
