"""The command line: `gpupipe run`, `inspect`, `report`, `ops` and `doctor`.

``app`` is the typer application; ``run``'s flags are generated from the op registry
(gpupipe/ops.py, through ``opflags``) and the options registry (gpupipe/options.py).
"""

import os

# The CLI's process defaults, set before NumPy loads (the package's names load lazily for this).
# One BLAS thread: gpupipe's parallelism is its worker processes (OpenCV is kept to one thread for
# the same reason); OpenBLAS would start a thread per core at NumPy's import, each spinning about
# 0.1 s before it sleeps: 10 % of the CPU of 5 000 tiny files (docs/benchmarks.md). A user's own
# setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from . import commands, run  # noqa: E402,F401  (each registers its commands on the app)
from .app import app, main  # noqa: E402

__all__ = ["app", "main"]
