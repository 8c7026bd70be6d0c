"""The work each stage does on one input, with no threads or queues in sight.

Every engine runs these same functions — the local engine in its threads, the
Ray engine in its tasks and actors — so outputs are byte-identical whichever
engine ran them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable


from .. import codecs, sources
from ..errors import InputError, InternalError, OutputConflict, UnreadableInput
from ..spec import Spec
from .writer import write_atomic

# Read errors worth another try: the device or the network may recover.
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.ESTALE, errno.ECONNRESET,
                    errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.EREMOTEIO}
# Read errors that are the system's, not the file's (a failing disk, a dead mount): the engine stops
# the run after several inputs in a row end with one (driver.READ_FAULTS_IN_A_ROW).
SYSTEM_ERRNOS = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.ENODEV, errno.ENXIO, errno.ETIMEDOUT,
                 errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET,
                 errno.ECONNABORTED, errno.EREMOTEIO, errno.ENOMEDIUM, errno.ESHUTDOWN}


def read_with_retries(path: str | Path, **how) -> bytes:
    """read_input_with_retries, the bytes only."""
    return read_input_with_retries(path, **how).data


def read_input_with_retries(path: str | Path, *, retries: int, retry_delay: float, wait: Callable[[float], bool],
                            on_attempt: Callable[[int], None] = lambda n: None) -> sources.InputRead:
    """Read an input, retrying transient I/O errors (flaky disks, network mounts) with
    exponential backoff and jitter; permanent ones (missing, a directory) fail at once.
    ``wait(seconds)`` sleeps and returns True if the run was stopped meanwhile. The
    UnreadableInput of a system-level error carries its errno's name as ``fault``."""
    for attempt in range(1, retries + 2):
        on_attempt(attempt)
        try:
            return sources.read_input(path)
        except UnreadableInput as exc:
            cause = exc.__cause__
            code = cause.errno if isinstance(cause, OSError) else None
            transient = code in TRANSIENT_ERRNOS
            if code in SYSTEM_ERRNOS:
                exc.fault = errno.errorcode[code]
            if not transient or attempt > retries:
                if transient:
                    exc.args = (f"{exc} (after {attempt} attempts)",)
                raise
            delay = min(5.0, retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            if wait(delay):
                raise
    raise AssertionError("unreachable")


def decode_input(data: bytes, spec: Spec, *, max_pixels: int, device_jpeg: bool = False) -> codecs.Decoded:
    """Decode for this spec (shrink-on-load where its first op allows); InputError on bad data,
    and a codec bug on one file becomes that file's InternalError, never the run's.
    ``device_jpeg``: the backend decodes JPEGs itself, so those it can take are only checked
    here (``codecs.defer_jpeg``) and their pixels are made on the device."""
    with _codec_errors_as_input_errors():
        if device_jpeg:
            deferred = codecs.defer_jpeg(data, max_pixels=max_pixels, min_size=spec.decode_hint)
            if deferred is not None:
                return deferred
        return codecs.decode(data, max_pixels=max_pixels, min_size=spec.decode_hint)


def decode_deferred(deferred: codecs.DeferredJpeg):
    """A deferred JPEG's pixels decoded on the host after all (the device is busy): what
    ``decode_input`` would have given; InputError on bad data."""
    with _codec_errors_as_input_errors():
        return deferred.decode_on_host()


@contextlib.contextmanager
def _codec_errors_as_input_errors():
    """InputErrors pass; any other exception from a codec (a bug met on one file) becomes that
    file's InternalError, never the run's."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise unexpected(exc) from exc


def decoded_size_bound(data: bytes) -> int:
    """Upper bound of the decoded size from the header; 0 when the header is unreadable
    (the decode then fails at once, holding nothing)."""
    try:
        width, height = codecs.header_size(data)
    except Exception:
        return 0
    return width * height * 4


@dataclass
class Encoded:
    files: list[tuple[PurePath, bytes]] = field(default_factory=list)   # (output path, file bytes)
    errors: list[InputError] = field(default_factory=list)              # variants that could not be made


def encode_variants(spec: Spec, results: list, relative: PurePath, decoded_format: str,
                    icc_profile: bytes | None) -> Encoded:
    """Encode every variant's result (an EncodedImage, already encoded by the backend, only
    gets its ICC profile), each under its output path for this input's decoded format."""
    encoded = Encoded()
    for variant, result in zip(spec.variants, results):
        if isinstance(result, InputError):
            encoded.errors.append(name_variant(spec, result, variant))
            continue
        path = variant.output_path(relative, decoded_format)
        try:
            if isinstance(result, codecs.EncodedImage):     # the backend encoded it (a GPU's nvJPEG)
                data = codecs.with_icc_profile(result, icc_profile)
            else:
                data = codecs.encode(result, format=variant.output_format(decoded_format), quality=variant.quality,
                                     background=variant.background[:3], icc_profile=icc_profile)
        except InputError as exc:
            encoded.errors.append(name_variant(spec, exc, variant))
            continue
        except Exception as exc:                # an encoder bug costs this output, not the run
            encoded.errors.append(name_variant(spec, unexpected(exc), variant))
            continue
        encoded.files.append((path, data))
    return encoded


def claim_renamed(encoded: Encoded, planned: list[PurePath], claim: Callable[[PurePath], str | None]) -> Encoded:
    """``planned`` are the output paths claimed at scan time from the file name; an output whose
    path changed because the bytes said another format than the extension must be granted by
    ``claim`` (which returns the owner if the path is taken), or it becomes an OutputConflict."""
    granted = []
    for path, data in encoded.files:
        other = None if path in planned else claim(path)
        if other is not None:
            encoded.errors.append(OutputConflict(f"output {path} is already written by {other}"))
        else:
            granted.append((path, data))
    encoded.files = granted
    return encoded


@dataclass
class Written:
    outputs: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    checksums: list[str] = field(default_factory=list)
    error: InputError | None = None


def write_outputs(output: Path, files: list[tuple[PurePath, bytes]], *, fsync: bool) -> Written:
    """Write each file atomically. A per-file write error is recorded and stops this
    input's remaining files; SystemFailure (disk full, read-only) propagates."""
    written = Written()
    for path, data in files:
        try:
            write_atomic(output / path, data, fsync=fsync)
        except InputError as exc:
            written.error = exc
            break
        written.outputs.append(str(output / path))
        written.sizes.append(len(data))
        written.checksums.append(hashlib.blake2b(data, digest_size=16).hexdigest())
    return written


def name_variant(spec: Spec, exc: InputError, variant) -> InputError:
    if len(spec.variants) == 1:
        return exc
    return type(exc)(f"variant {variant.name}: {exc}")


def unexpected(exc: Exception) -> InputError:
    return InternalError(f"unexpected {exc.__class__.__name__}: {exc}")
