"""Backends: one interface (``base.Backend``), one module per array library.

The engine never imports an array library itself; it asks ``select_backend``.
"""

from __future__ import annotations

import logging

from ..errors import SystemFailure, UsageError
from .base import Backend

BACKEND_CHOICES = ("auto", "cpu", "gpu")
log = logging.getLogger("gpupipe")


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


def cuda_report() -> dict[str, str]:
    """What `gpupipe doctor` says about CUDA: device, driver and runtime, CuPy, GPU decoders."""
    from importlib.metadata import PackageNotFoundError, version

    facts: dict[str, str] = {}
    reason = cuda_unavailable_reason()
    if reason is None:
        import cupy
        runtime = cupy.cuda.runtime
        props = runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = runtime.memGetInfo()
        facts["CUDA device"] = (f"{name}, compute {props['major']}.{props['minor']}, {total / 2**30:.0f} GiB "
                                f"({free / 2**30:.0f} free), {runtime.getDeviceCount()} device(s)")
        facts["CUDA driver / runtime"] = f"{runtime.driverGetVersion()} / {runtime.runtimeGetVersion()}"
        facts["CuPy"] = cupy.__version__
    else:
        facts["CUDA"] = f"not usable: {reason}"
    from .cuda.jpeg import nvimgcodec_unavailable_reason
    found = []
    for dist in ("nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12"):
        try:
            found.append(f"{version(dist)} ({dist})")
        except PackageNotFoundError:
            pass
    problem = nvimgcodec_unavailable_reason()
    if problem is None:
        facts["nvImageCodec"] = (f"{', '.join(found) or 'importable'}: --gpu-decode / --gpu-encode decode / "
                                 "encode JPEGs on the GPU (nvJPEG)")
    else:
        facts["nvImageCodec"] = ("installed but not importable: " + problem if found else
                                 "not installed (JPEG decode and encode on the CPU; "
                                 "pip install 'gpupipe[nvimgcodec]')")
    try:
        facts["NVIDIA DALI"] = f"{version('nvidia-dali-cuda120')} installed, not used (nvImageCodec decodes)"
    except PackageNotFoundError:
        pass
    return facts


def select_backend(choice: str = "auto", *, workers: int = 1, gpu_memory: int | None = None,
                   gpu_decode: bool = False, gpu_encode: bool = False) -> Backend:
    """Build the backend for ``--backend``: auto prefers the GPU when one is usable.

    ``gpu_memory`` caps the CuPy memory pool (bytes); ``gpu_decode`` lets the GPU backend decode
    JPEGs with nvJPEG when nvImageCodec is installed (opt-in: nvJPEG does not report corrupt
    data); ``gpu_encode`` lets it encode JPEG results with nvJPEG (opt-in: other bytes than
    libjpeg-turbo's). ``gpu`` fails with the reason
    when CUDA is not usable; ``auto`` then falls back to the CPU, with a warning when
    a GPU was there but its backend failed to start (e.g. the kernels did not compile).
    """
    if choice not in BACKEND_CHOICES:
        raise UsageError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice in ("gpu", "auto"):
        reason = cuda_unavailable_reason()
        if reason is None:
            from .cuda.backend import CupyBackend
            try:
                return CupyBackend(workers=workers, memory_limit=gpu_memory, jpeg_decode=gpu_decode,
                                   jpeg_encode=gpu_encode)
            except SystemFailure as exc:
                reason = str(exc)
                if choice == "auto":
                    log.warning("the GPU backend did not start (%s); using the CPU", reason)
        if choice == "gpu":
            raise UsageError(f"--backend gpu: CUDA not available: {reason}. Use --backend cpu (or auto).")
    from .numpy import NumpyBackend
    return NumpyBackend(workers=workers)
