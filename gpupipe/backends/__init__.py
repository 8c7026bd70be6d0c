"""Backends: one interface (``base.Backend``), one module per array library.

The engine never imports an array library itself. A run asks ``choose_backend`` for a
``BackendChoice``, which each of its workers builds in its own process; ``select_backend``
builds one here, for work in this process (``gpupipe.apply``, a Ray actor, ``doctor``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
from typing import Callable, Literal, get_args

from ..errors import SystemFailure, UsageError
from ..records import dataclass
from .base import Backend

BackendName = Literal["auto", "cpu", "gpu"]     # --backend: auto takes the GPU when CUDA is usable
BACKEND_CHOICES = get_args(BackendName)
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
        facts["nvImageCodec"] = (f"{', '.join(found) or 'importable'}: --decoder nvimgcodec / --gpu-encode "
                                 "decode / encode JPEGs on the GPU (nvJPEG)")
    else:
        facts["nvImageCodec"] = ("installed but not importable: " + problem if found else
                                 "not installed (JPEG decode and encode on the CPU; "
                                 "pip install 'gpupipe[nvimgcodec]')")
    from ..codecs.dali import dali_unavailable_reason, dali_version
    problem = dali_unavailable_reason()
    if problem is None:
        where = "on the GPU with the GPU backend, else on the CPU" if reason is None else "on the CPU (no usable GPU)"
        facts["NVIDIA DALI"] = f"{dali_version()}: --decoder dali decodes JPEGs in batches {where}"
    else:
        facts["NVIDIA DALI"] = "not installed (pip install 'gpupipe[dali]' for --decoder dali)"
    return facts


@dataclass(frozen=True)
class BackendChoice:
    """A run's backend as its workers build it, each in its own process: a CUDA context does not
    survive a fork, so the run's own process never opens one (``choose_backend`` checks the
    device in a child). ``make()`` builds one worker's backend."""

    name: str                          # "cpu", "gpu" (a test's stand-in device: its own name)
    description: str                   # as the summary says it
    make: Callable[[], Backend]
    # CUDA is open in this process already (an application's own GPU work): a forked worker
    # could not use it, so the run works in this process instead, one chunk at a time.
    in_process: bool = False
    # Modules its workers use, loaded by the run's own process just before it forks them, so
    # each worker inherits them loaded instead of loading its own copy.
    modules: tuple[str, ...] = ()


def choose_backend(choice: str = "auto", *, workers: int = 1, gpu_memory: int | None = None,
                   decoder: str = "auto", gpu_encode: bool = False) -> BackendChoice:
    """``select_backend``'s choice for a run of ``workers`` worker processes, without opening the
    device in this process. Each GPU worker gets its share of ``gpu_memory``; the nvJPEG codecs
    go to the workers only where the check found them working (it said why not, once)."""
    if choice not in BACKEND_CHOICES:
        raise UsageError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice in ("gpu", "auto"):
        here = cuda_opened_here()
        limit = None if gpu_memory is None else max(1, gpu_memory // (1 if here else max(1, workers)))
        found = _try_gpu(limit, decoder, gpu_encode) if here else _gpu_in_a_child(limit, decoder, gpu_encode)
        if "description" in found:
            from .cuda.backend import CupyBackend
            # A device decoder the check could not start (it said why, once) is not asked of each worker.
            lost = decoder in ("nvimgcodec", "dali") and not found["decodes_jpeg"]
            make = functools.partial(CupyBackend, memory_limit=limit, decoder="auto" if lost else decoder,
                                     jpeg_encode=found["encodes_jpeg"])
            if here:
                log.warning("CUDA is open in this process already, so worker processes forked from it could not "
                            "use the GPU: the run works in this process, one batch at a time (run gpupipe in "
                            "a process of its own, e.g. the CLI, for one worker per core)")
                return BackendChoice("gpu", f"{found['description'][:-1]}, in this process)", make, in_process=True)
            return BackendChoice("gpu", _with_workers(found["description"], workers), make)
        reason = found["reason"]
        if choice == "gpu":
            raise UsageError(f"--backend gpu: CUDA not available: {reason}. Use --backend cpu (or auto).")
        if found.get("started"):          # a GPU was there but its backend failed: say why the CPU runs
            log.warning("the GPU backend did not start (%s); using the CPU", reason)
    # Described, not built: DALI's threads must not start in the process that forks the workers,
    # and the run's own process loads no NumPy before it forks them (engine.pool).
    return BackendChoice("cpu", _with_workers(cpu_description(decoder), workers),
                         functools.partial(_cpu_backend, decoder=decoder), modules=("gpupipe.backends.numpy",))


CPU_DESCRIPTION = "cpu (NumPy/OpenCV/Pillow)"


def cpu_description(decoder: str) -> str:
    """What the summary calls the CPU backend with ``decoder``."""
    named = {"dali": ", DALI decodes JPEGs", "pillow": ", Pillow decodes JPEGs"}.get(decoder, "")
    return f"{CPU_DESCRIPTION[:-1]}{named})"


def _cpu_backend(decoder: str) -> Backend:
    """One worker's CPU backend (``BackendChoice.make``)."""
    from .numpy import NumpyBackend
    return NumpyBackend(decoder=decoder)


def _with_workers(description: str, workers: int) -> str:
    """"gpu (CuPy, H100)" -> "gpu (CuPy, H100, 4 worker processes)": the summary's words."""
    return f"{description[:-1]}, {workers} worker process{'es' * (workers != 1)})"


def cuda_opened_here() -> bool:
    """Whether this process has loaded the CUDA driver (libcuda), so a CUDA context may be open in
    it: a child forked from it cannot use CUDA. Linux: from /proc/self/maps; elsewhere False."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libcuda.so" in line for line in maps)
    except OSError:
        return False


def _gpu_in_a_child(memory_limit: int | None, decoder: str, jpeg_encode: bool) -> dict:
    """Whether the GPU backend starts, tried in a forked child (which also leaves the compiled
    kernels in CuPy's cache for the workers): {"description", "decodes_jpeg", "encodes_jpeg"},
    or {"reason", "started"} (started: CUDA was usable but the backend failed)."""
    if importlib.util.find_spec("cupy") is None:
        return {"reason": "CuPy is not installed; install gpupipe[gpu]"}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: answer, and leave without cleanup
        try:
            os.close(read)
            os.write(write, json.dumps(_try_gpu(memory_limit, decoder, jpeg_encode)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(text)
    except ValueError:
        return {"reason": f"checking the GPU crashed its process (wait status {status})", "started": True}


def _try_gpu(memory_limit: int | None, decoder: str, jpeg_encode: bool) -> dict:
    reason = cuda_unavailable_reason()
    if reason is not None:
        return {"reason": reason}
    from .cuda.backend import CupyBackend
    try:
        backend = CupyBackend(memory_limit=memory_limit, decoder=decoder, jpeg_encode=jpeg_encode)
    except SystemFailure as exc:
        return {"reason": str(exc), "started": True}
    return {"description": backend.describe(), "decodes_jpeg": backend.decodes_jpeg,
            "encodes_jpeg": backend.encodes_jpeg}


def select_backend(choice: str = "auto", *, workers: int = 1, gpu_memory: int | None = None,
                   decoder: str = "auto", gpu_encode: bool = False) -> Backend:
    """Build the backend for ``--backend``: auto prefers the GPU when one is usable.

    ``gpu_memory`` caps the CuPy memory pool (bytes); ``decoder`` (``--decoder``) says what decodes
    JPEGs: nvimgcodec lets the GPU backend decode them with nvJPEG when nvImageCodec is installed,
    dali hands them to DALI in batches (opt-in, both: they do not report corrupt data); ``gpu_encode`` lets it encode JPEG results with nvJPEG (opt-in: other bytes than
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
                return CupyBackend(workers=workers, memory_limit=gpu_memory, decoder=decoder,
                                   jpeg_encode=gpu_encode)
            except SystemFailure as exc:
                reason = str(exc)
                if choice == "auto":
                    log.warning("the GPU backend did not start (%s); using the CPU", reason)
        if choice == "gpu":
            raise UsageError(f"--backend gpu: CUDA not available: {reason}. Use --backend cpu (or auto).")
    from .numpy import NumpyBackend
    return NumpyBackend(decoder=decoder)
