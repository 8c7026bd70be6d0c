"""Backends: one interface (``base.Backend``), one module per array library.

The engine never imports an array library itself; it asks ``select_backend``.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import Backend

BACKEND_CHOICES = ("auto", "cpu", "gpu")


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA device is usable through CuPy, else why not (for messages and `doctor`)."""
    try:
        import cupy  # noqa: F401  (optional extra: gpupipe[gpu])
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return f"CuPy is not installed or failed to import ({exc.__class__.__name__}: {exc}); install gpupipe[gpu]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA device ({exc})"
    return None if count > 0 else "no CUDA device found"


def select_backend(choice: str = "auto", *, workers: int = 1) -> Backend:
    """Build the backend for ``--backend``: auto prefers the GPU when one is usable."""
    if choice not in BACKEND_CHOICES:
        raise UsageError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice in ("gpu", "auto"):
        reason = cuda_unavailable_reason()
        if reason is None:
            reason = "the CuPy backend is not part of this build yet"
        if choice == "gpu":
            raise UsageError(f"--backend gpu: CUDA not available: {reason}. Use --backend cpu (or auto).")
    from .numpy import NumpyBackend
    return NumpyBackend(workers=workers)
