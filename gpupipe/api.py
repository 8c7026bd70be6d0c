"""The Python API: the CLI's capabilities for scripts and notebooks.

    import gpupipe
    from gpupipe import ops

    spec = gpupipe.Spec.single([ops.Thumbnail(256)], format="webp", quality=85)
    result = gpupipe.run(["photos/"], "out/", spec, on_progress=print)
    result.summary.processed, result.failed

    small = gpupipe.apply([ops.Thumbnail(256), ops.Sharpen()], pil_image)   # in memory
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Unpack

from .backends import BackendName, choose_backend, select_backend
from .engine.cancel import CancelToken
from .engine.options import ENGINE_OPTIONS, RunOptions, usable_cores
from .engine.writer import OutputLock, check_output_dir
from .engine.results import FileOutcome, RunResult, RunSummary
from .errors import GpupipeError, InputError, SystemFailure, UsageError
from .journal import Journal
from .ops import Op
from .options import Options, parse_address, resolve
from .spec import Spec
from . import sources

if TYPE_CHECKING:
    import numpy as np


def run(inputs: str | Path | Sequence[str | Path], output: str | Path, spec: Spec | Iterable[Op] | str | Path,
        *, on_progress: Callable[[RunSummary], None] | None = None,
        on_outcome: Callable[[FileOutcome], None] | None = None, cancel: CancelToken | None = None,
        **options: Unpack[Options]) -> RunResult:
    """Process every image under ``inputs`` into ``output`` as ``spec`` says.

    ``spec`` is a Spec, a list of ops (one unnamed variant, format kept) or a TOML path.
    ``options`` are the run's options, defined in ``gpupipe.options.Options`` (each with its type,
    default and help; docs/usage.md lists them): ``backend``, ``workers``, ``journal``, ``force``…
    An option not given here takes its ``GPUPIPE_<NAME>`` environment variable, else its default.
    ``on_progress`` gets the summary as the run goes, ``on_outcome`` every input's outcome, and
    ``cancel.cancel()`` from another thread stops the run cleanly.

    The journal (default OUT/.gpupipe/journal.sqlite) makes a re-run skip inputs done before and
    unchanged whose outputs are still there at the size written; a damaged one raises UsageError
    (with ``force`` it is set aside and a new one started); one that cannot be created (no space)
    raises SystemFailure. The work runs in ``workers`` processes forked from this one, a chunk of
    inputs at a time (read, decode, ops, encode and write), so a codec that crashes, or a worker
    the OOM killer picks, costs the one input it was on (error class ``crashed``), not the run. On
    the GPU each worker has its own CUDA context (this process never opens one). A file already
    at an output path is kept, and its input fails as ``output_exists``, unless the journal
    recorded writing it or ``overwrite=True``; an input of the run is never replaced. Two runs
    never write one ``output`` at once: the second raises UsageError. ``engine="ray"`` runs the
    same pipeline on a Ray cluster: same outputs, same outcomes.
    Raises UsageError for bad arguments (a metrics port in use too), before any work.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    spec = as_spec(spec)
    settings = SimpleNamespace(**resolve(options))
    if settings.ray_address is not None and settings.engine != "ray":
        raise UsageError("ray_address (--ray-address) needs engine 'ray' (--engine ray)")
    sources.check_inputs(inputs)
    check_output_dir(Path(output), inputs)
    spec.check_resources(max_pixels=settings.max_pixels)
    workers = settings.workers or usable_cores()
    backend, journal, engine = settings.backend, settings.journal, settings.engine
    decoder, gpu_encode = settings.decoder, settings.gpu_encode
    engine_options = RunOptions(
        workers=workers, on_outcome=on_outcome, on_progress=on_progress,
        **{name: getattr(settings, name) for name in ENGINE_OPTIONS})
    metrics_host, metrics_port = settings.metrics_host, settings.metrics_port
    if isinstance(metrics_port, str):
        metrics_host, metrics_port = parse_address(metrics_port)
    metrics_file = settings.metrics_file
    metrics = _start_metrics(metrics_port, metrics_host, metrics_file)    # a busy port fails here, before any work
    lock = None
    try:
        _check_codecs(decoder, gpu_encode, backend, engine)
        chosen = choose_backend(backend, workers=workers, gpu_memory=settings.gpu_memory, decoder=decoder,
                                gpu_encode=gpu_encode)
        _warn_about_unused_gpu_codecs(spec, chosen.name, decoder == "nvimgcodec", gpu_encode)
        lock = OutputLock(output)            # held to the end: a second run on this OUT is refused
        if journal is not False:
            choices = dict(force=settings.force, retry_failed=settings.retry_failed, verify=settings.verify)
            engine_options.journal = (Journal.for_output(output, spec.hash(), **choices) if journal is True
                                      else Journal(Path(journal), spec.hash(), **choices))
    except BaseException:
        if metrics is not None:
            metrics.close()
        if lock is not None:
            lock.release()
        raise
    if metrics is not None:
        engine_options.on_outcome = _chain(metrics.observe, on_outcome)
    result = None
    try:
        runner = _make_engine(engine, spec, chosen, backend, engine_options, cancel, settings.ray_address)
        if metrics is not None:
            metrics.attach(runner)
        if settings.progress and on_progress is None:
            from .observe import ProgressDisplay
            with ProgressDisplay() as display:
                engine_options.on_progress = display.update
                result = runner.run(inputs, output)
        else:
            result = runner.run(inputs, output)
        return result
    finally:
        try:
            if metrics is not None:
                _finish_metrics(metrics, metrics_file, result)
        finally:
            try:
                if engine_options.journal is not None:
                    _close_journal(engine_options.journal, result)
            finally:
                lock.release()


def _close_journal(journal: Journal, result: RunResult | None) -> None:
    """Record the run in the journal and release it; what it has to say goes into the summary."""
    if result is None:                 # the run raised: that error is the one to see
        try:
            journal.close()
        except SystemFailure as exc:
            logging.getLogger("gpupipe").error("%s", exc)
        return
    result.summary.notes.extend(journal.notes)
    try:
        journal.close(result.summary.to_dict())
    except SystemFailure as exc:       # every input's outcome was committed before: only the run's record is lost
        result.summary.stop_reason = result.summary.stop_reason or f"{exc}; every input's outcome is recorded"


def _check_codecs(decoder: str, gpu_encode: bool, backend: str, engine: str) -> None:
    """UsageError for a decoder or encoder this run cannot have, before any work."""
    for wanted, name in ((decoder == "nvimgcodec", "decoder nvimgcodec (--decoder nvimgcodec)"),
                         (gpu_encode, "gpu_encode (--gpu-encode)")):
        if wanted and backend == "cpu":
            raise UsageError(f"{name} needs the GPU backend (--backend gpu or auto)")
        if wanted and engine == "ray":
            raise UsageError(f"{name} works with the local engine only: Ray's tasks use libjpeg-turbo")
    if decoder == "dali":
        from .codecs.dali import dali_unavailable_reason
        if engine == "ray":
            raise UsageError("decoder dali (--decoder dali) works with the local engine only")
        problem = dali_unavailable_reason()
        if problem is not None:
            raise UsageError(f"--decoder dali: {problem}")


def _warn_about_unused_gpu_codecs(spec: Spec, backend: str, gpu_decode: bool, gpu_encode: bool) -> None:
    """Say so when --decoder nvimgcodec/--gpu-encode cannot do anything in this run (the CPU backend
    was chosen, or no variant writes JPEG), rather than let the user believe they did."""
    log = logging.getLogger("gpupipe")
    asked = [flag for flag, wanted in (("--decoder nvimgcodec", gpu_decode), ("--gpu-encode", gpu_encode))
             if wanted]
    if asked and backend != "gpu":
        log.warning("%s: this run uses the %s backend, so JPEGs are decoded and encoded on the CPU",
                    " and ".join(asked), backend)
    if gpu_encode and all(v.format not in (None, "jpeg") for v in spec.variants):
        log.warning("--gpu-encode: no variant writes JPEG (formats: %s), so it changes nothing",
                    ", ".join(sorted({str(v.format) for v in spec.variants})))


def _make_engine(engine: str, spec: Spec, chosen, backend: str, options: RunOptions, cancel: CancelToken | None,
                 ray_address: str | None):
    if engine == "ray":
        from .engine.ray_engine import RayEngine
        # Each Ray actor builds its own backend from the choice; the one made here only checked it.
        return RayEngine(spec, backend if backend != "auto" else chosen.name, options, cancel, address=ray_address)
    from .engine.processes import ProcessEngine
    return ProcessEngine(spec, chosen, options, cancel)


def _start_metrics(port: int | None, host: str, path: str | Path | None):
    if port is None and path is None:
        return None
    from .metrics import RunMetrics
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"metrics_port must be 1-65535, got {port}")
    metrics = RunMetrics()
    if path is not None:
        metrics.check_textfile(path)
    if port is not None:
        metrics.serve(port, host)
    return metrics


def _finish_metrics(metrics, path: str | Path | None, result: RunResult | None) -> None:
    """Write the textfile (also after a failed or interrupted run), then free the port.
    A textfile that cannot be written (a full disk) is one of the run's side-file errors:
    the outputs and the journal are fine, the exit code says the run did not deliver it all."""
    try:
        if path is not None:
            metrics.write_textfile(path)
    except GpupipeError as exc:
        if result is not None:
            result.summary.side_file_errors.append(str(exc))
        else:
            logging.getLogger("gpupipe").error("metrics file not written: %s", exc)   # keep the run's own error
    finally:
        metrics.close()


def _chain(first: Callable[[FileOutcome], None], then: Callable[[FileOutcome], None] | None):
    if then is None:
        return first

    def both(outcome: FileOutcome) -> None:
        first(outcome)
        then(outcome)
    return both


def as_spec(spec: Spec | Iterable[Op] | str | Path) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, (str, Path)):
        return Spec.from_toml(spec)
    return Spec.single(list(spec))


def apply(spec: Spec | Iterable[Op] | Op, image: Any, *, backend: BackendName = "cpu", exif_orientation: bool = True) -> Any:
    """Apply a spec to one in-memory image (NumPy HWC/HW uint8 or uint16 array, or PIL image).

    Returns the same kind of object: one image for a single-variant spec or a list
    of ops, a {variant name: image} dict when the spec has several variants. A single-channel
    result (grayscale) of an array comes back H×W, unless the array was H×W×1.
    A PIL image's EXIF Orientation is applied first, as ``run`` applies it to files
    (``exif_orientation=False``: the pixels as they are stored).
    Raises gpupipe.errors.ProcessingError when an op cannot apply to this image.
    """
    import numpy as np                    # here, not above: a run's own process never needs it

    from . import pixels
    from .engine.process import process_batch
    spec = Spec.single([spec]) if isinstance(spec, Op) else as_spec(spec)
    pil_mode = None
    if hasattr(image, "mode") and hasattr(image, "size"):        # a PIL image
        from .codecs import pil_to_array
        pil_mode, array = image.mode, pil_to_array(image, exif_orientation=exif_orientation)
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.dtype not in pixels.DTYPES or array.ndim != 3 or array.shape[2] not in pixels.CHANNELS:
            raise UsageError(f"apply takes uint8 or uint16 arrays of shape HxW or HxWxC with C in 1..4, got "
                             f"{array.dtype} {array.shape}")
    chosen = select_backend(backend, workers=1)
    try:
        row = process_batch(chosen, [np.ascontiguousarray(array)], spec)[0]
    finally:
        chosen.close()
    keep_channel_axis = pil_mode is None and np.ndim(image) == 3 and np.shape(image)[2] == 1
    outputs = {}
    for variant, result in zip(spec.variants, row):
        if isinstance(result, InputError):
            raise result
        outputs[variant.name] = _as_pil(result) if pil_mode is not None else (
            result[:, :, 0] if result.shape[2] == 1 and not keep_channel_axis else result)
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def _as_pil(array: np.ndarray):
    from PIL import Image
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
