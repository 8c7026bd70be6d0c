"""The work each stage does on one input, with no threads or queues in sight.

Every engine runs these same functions — the local engine in its threads, the
Ray engine in its tasks and actors — so outputs are byte-identical whichever
engine ran them.
"""

from __future__ import annotations

import errno
import os
import random
import time
from dataclasses import field
from pathlib import Path
from typing import Callable, Container, Sequence, TypeVar

from .. import codecs, sources
from ..errors import InputError, InternalError, OutputConflict, SystemFailure, UnreadableInput, WriteError
from ..journal import checksum
from ..ops import BYTES_PER_PIXEL
from ..records import dataclass
from ..spec import OpTrie, Spec
from .writer import WritePolicy, write_output

T = TypeVar("T")

# Read errors worth another try: the device or the network may recover.
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.ESTALE, errno.ECONNRESET,
                    errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.EREMOTEIO}
# Read errors that are the system's, not the file's (a failing disk, a dead mount): the engine stops
# the run after several inputs in a row end with one (driver.READ_FAULTS_IN_A_ROW).
SYSTEM_ERRNOS = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.ENODEV, errno.ENXIO, errno.ETIMEDOUT,
                 errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET,
                 errno.ECONNABORTED, errno.EREMOTEIO, errno.ENOMEDIUM, errno.ESHUTDOWN}


def read_input_with_retries(path: str | Path, *, retries: int, retry_delay: float, wait: Callable[[float], bool],
                            on_attempt: Callable[[int], None] = lambda n: None) -> sources.InputRead:
    """Read an input, retrying transient I/O errors (flaky disks, network mounts) with
    exponential backoff and jitter; permanent ones (missing, a directory) fail at once.
    ``wait(seconds)`` sleeps and returns True if the run was stopped meanwhile; ``on_attempt(n)``
    is told of each attempt after the first. The UnreadableInput of a system-level error carries
    its errno's name as ``fault``."""
    try:
        return sources.read_input(path)       # the first attempt: nearly every read ends here, nothing around it
    except UnreadableInput as exc:
        failed = _with_fault(exc)

    def read(attempt: int) -> sources.InputRead:
        on_attempt(attempt)
        try:
            return sources.read_input(path)
        except UnreadableInput as exc:
            _with_fault(exc)
            raise
    return retry(read, UnreadableInput, failed, retries=retries, retry_delay=retry_delay, wait=wait)


def _with_fault(exc: UnreadableInput) -> UnreadableInput:
    """``exc``, with its errno's name as ``fault`` when the error is the system's (a dead mount)."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno in SYSTEM_ERRNOS:
        exc.fault = errno.errorcode[cause.errno]
    return exc


def decode_input(data: bytes, spec: Spec, *, max_pixels: int, device_jpeg: bool = False,
                 name: str | None = None, jpeg: str = "turbo") -> codecs.Decoded:
    """Decode for this spec (shrink-on-load where its first op allows); InputError on bad data,
    and a codec bug on one file becomes that file's InternalError, never the run's.
    ``device_jpeg``: the backend decodes JPEGs itself, so those it can take are only checked
    here (``codecs.defer_jpeg``) and their pixels are made on the device. ``jpeg``: the host's
    JPEG decoder, turbo or pillow (``Backend.host_decoder``)."""
    # Not a context manager: its generator cost 2.5 µs of a tiny input's 28 µs decode.
    try:
        if device_jpeg:
            deferred = codecs.defer_jpeg(data, max_pixels=max_pixels, min_size=spec.decode_hint)
            if deferred is not None:
                return deferred
        return codecs.decode(data, max_pixels=max_pixels, min_size=spec.decode_hint, name=name,
                             values=spec.reads_measured_values, raw_bits=spec.raw_bits, jpeg=jpeg)
    except CODEC_ERRORS_THAT_PASS:
        raise
    except Exception as exc:
        raise unexpected(exc) from exc


def decode_deferred(deferred: codecs.DeferredJpeg):
    """A deferred JPEG's pixels decoded on the host after all (the device is busy): what
    ``decode_input`` would have given; InputError on bad data."""
    try:
        return deferred.decode_on_host()
    except CODEC_ERRORS_THAT_PASS:
        raise
    except Exception as exc:
        raise unexpected(exc) from exc


# What a decoder may raise as it is: InputErrors, and SystemFailures (the process itself is unfit
# to decode, e.g. Pillow's LOAD_TRUNCATED_IMAGES switched on by other code). Any other exception
# from a codec (a bug met on one file) becomes that file's InternalError, never the run's.
CODEC_ERRORS_THAT_PASS = (InputError, SystemFailure)


def _header_size(data: bytes, name: str | None = None) -> tuple[int, int] | None:
    try:
        return codecs.header_size(data, name)
    except Exception:
        return None


# Peak bytes per decoded pixel while decoding, measured: libjpeg-turbo decodes a JPEG straight
# into its array (3.2); Pillow decodes into its own image, then the array is copied out (PNG: 10).
DECODE_BYTES_PER_PIXEL = {"jpeg": 4}
DECODE_BYTES_PER_PIXEL_PILLOW = 11
# An encoder's copy of the pixels (Pillow's RGBA image) and the file it makes, per result pixel.
ENCODE_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class MemoryNeed:
    """The most memory one input takes on the host: while decoding, and from its decoded
    pixels to its encoded files (ops and encoders, the pixels held meanwhile included)."""

    decode: int
    process: int

    @property
    def peak(self) -> int:
        return max(self.decode, self.process)

    def describe(self) -> str:
        return f"about {_mb(self.peak)} at its peak (decoding {_mb(self.decode)}, ops and encoding {_mb(self.process)})"


def _mb(amount: int) -> str:
    return f"{amount / 2**20:,.0f} MB"


def memory_need(data: bytes, spec: Spec, trie: OpTrie, *, ops_on_host: bool, name: str | None = None) -> MemoryNeed:
    """What ``data`` will need, from its header alone (0 when the header is unreadable: the
    decode then fails at once, holding nothing). ``ops_on_host``: the backend runs the ops in
    host memory (the CPU); a GPU's host side holds only the decoded input and the results."""
    size = _header_size(data, name)
    if size is None:
        return MemoryNeed(0, 0)
    fmt = codecs.sniff(data[:64])
    depth = _sample_bytes(data, fmt)
    # The same sizes come back again and again (a camera's photos, a dataset's thumbnails): each
    # worker works a size's need out once per spec (this trie's), not per input.
    known = trie.__dict__.setdefault("_memory_needs", {})
    key = (fmt, size, ops_on_host, depth)
    need = known.get(key)
    if need is None:
        width, height = _decoded_size(*size, spec) if fmt == "jpeg" else size
        per_pixel = DECODE_BYTES_PER_PIXEL.get(fmt, DECODE_BYTES_PER_PIXEL_PILLOW)
        # A 16-bit image takes twice the bytes at every step: counted so, an upper bound (the
        # filters' float32 working sets do not grow with the depth).
        need = MemoryNeed(depth * per_pixel * width * height,
                          depth * processing_need(trie, width, height, ops_on_host=ops_on_host))
        if len(known) >= 4096:
            known.clear()
        known[key] = need
    return need


def _sample_bytes(data: bytes, fmt: str | None) -> int:
    """Bytes a sample will take once decoded: 2 for a 16-bit PNG (its header says) and for any
    TIFF (it may be: the bits are deep in its tags), else 1 (gpupipe.pixels)."""
    if fmt == "png":
        return 2 if len(data) > 24 and data[24] == 16 else 1
    return 2 if fmt == "tiff" else 1


def _decoded_size(width: int, height: int, spec: Spec) -> tuple[int, int]:
    """A JPEG's size once decoded for ``spec``: a leading shrink lets it decode at a DCT scale
    (codecs.decode with Spec.decode_hint). The least reduction either orientation allows, as
    the EXIF orientation is not read here."""
    from ..codecs.jpeg import _pick_scale       # the decoder's own choice of DCT scale (a worker has it loaded)
    scales = []
    for upright in ((width, height), (height, width)):
        hint = spec.decode_hint(*upright)
        stored = hint if hint is None or upright == (width, height) else (hint[1], hint[0])
        scales.append(_pick_scale(width, height, stored))
    scale = min(scales)
    return -(-width // scale), -(-height // scale)


def processing_need(trie: OpTrie, width: int, height: int, *, ops_on_host: bool, held: int | None = None) -> int:
    """The peak from a decoded width×height image to its encoded files. Either orientation:
    the header's size is the stored one, and an EXIF rotation swaps it before the ops.
    ``held``: the input's bytes on the host if not its pixels (a JPEG the device decodes)."""
    held = BYTES_PER_PIXEL * width * height if held is None else held
    return max(_processing_need(trie, w, h, ops_on_host, held) for w, h in ((width, height), (height, width)))


def _processing_need(trie: OpTrie, width: int, height: int, ops_on_host: bool, held: int) -> int:
    peak, results, largest = _subtree_need(trie, width, height, ops_on_host, held)
    # The encoders run once every result is made: all results held, one encoder at work.
    return max(peak, results + ENCODE_BYTES_PER_PIXEL * largest)


def _subtree_need(node: OpTrie, width: int, height: int, on_host: bool, held: int) -> tuple[int, int, int]:
    """(peak bytes, result bytes kept, largest result in pixels) of the ops below ``node``, run on
    its width×height image (``held`` bytes of host memory) as process._walk runs them: every
    child's op on the image, then the image freed (unless a variant's result) and each child's
    subtree in turn, the results of earlier subtrees kept for the encoders. Off the host (a GPU)
    only the input and the results, downloaded, take host memory. An op that cannot apply
    costs nothing (it fails)."""
    is_result = bool(node.variant_indices)
    made, peak = [], held
    for child in node.children:
        try:
            out_w, out_h = child.op.output_size(width, height)
        except InputError:
            continue
        working = child.op.peak_bytes(width, height) if on_host else 0
        peak = max(peak, held + sum(image for *_, image in made) + working)
        made.append((child, out_w, out_h, BYTES_PER_PIXEL * out_w * out_h if on_host else 0))
    kept = BYTES_PER_PIXEL * width * height if is_result else 0
    largest = width * height if is_result else 0
    for position, (child, out_w, out_h, image) in enumerate(made):
        waiting = sum(later for *_, later in made[position + 1:])
        sub_peak, sub_kept, sub_largest = _subtree_need(child, out_w, out_h, on_host, image)
        peak = max(peak, kept + waiting + sub_peak)
        kept += sub_kept
        largest = max(largest, sub_largest)
    return peak, kept, largest


@dataclass
class Encoded:
    """One input's encoded outputs, and the variants that could not be made."""

    files: list[tuple[str, bytes]] = field(default_factory=list)   # (output path below OUT, file bytes)
    errors: list[InputError] = field(default_factory=list)              # variants that could not be made


def encode_variants(spec: Spec, results: list, relative: str, decoded_format: str,
                    icc_profile: bytes | None, paths: Sequence[str] | None = None) -> Encoded:
    """Encode every variant's result (an EncodedImage, already encoded by the backend, only
    gets its ICC profile), each under its output path for this input's decoded format
    (``paths``, when the caller knows them already)."""
    encoded = Encoded()
    for position, (variant, result) in enumerate(zip(spec.variants, results)):
        if isinstance(result, InputError):
            encoded.errors.append(name_variant(spec, result, variant))
            continue
        try:
            path = paths[position] if paths is not None else variant.output_path(relative, decoded_format)
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


def claim_renamed(encoded: Encoded, planned: Sequence[str], claim: Callable[[str], str | None]) -> Encoded:
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
    """One input's outputs as written: their paths below OUT, sizes and checksums."""

    outputs: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    checksums: list[str] = field(default_factory=list)
    error: InputError | None = None


def write_outputs(output: Path, files: list[tuple[str, bytes]], *, fsync: bool, policy: WritePolicy,
                  replaceable: Container[str] = (), wait: Callable[[float], bool] | None = None) -> Written:
    """Write each file atomically under ``policy``: an existing file is replaced only with
    ``policy.overwrite`` or when its path is in ``replaceable`` (the journal wrote it), an input
    of the run never. A per-file error is recorded and stops this input's remaining files;
    SystemFailure (disk full, read-only) propagates. ``output`` is OUT as recorded in outcomes."""
    written = Written()
    for path, data in files:
        try:
            inside = policy.input_at(path)
            if inside is not None:
                raise OutputConflict(f"output {os.path.join(output, path)} would be written into the input {inside}: gpupipe "
                                     "never writes over or among the inputs of a run; choose an output directory "
                                     "outside the inputs")
            # Asked only if a file is in the way: ``replaceable`` may be the journal itself.
            replace = policy.overwrite or (lambda path=path: path in replaceable)
            write_with_retries(lambda: write_output(policy.root, path, data, fsync=fsync, replace=replace),
                               retries=policy.retries, retry_delay=policy.retry_delay, wait=wait)
        except InputError as exc:
            written.error = exc
            break
        written.outputs.append(os.path.join(output, path))
        written.sizes.append(len(data))
        written.checksums.append(checksum(data))
    return written


def write_with_retries(write: Callable[[], None], *, retries: int, retry_delay: float,
                       wait: Callable[[float], bool] | None = None) -> None:
    """Run ``write``, retrying a WriteError caused by a transient errno (EIO, ESTALE, a network
    mount's timeout) with the reads' backoff; ``wait(seconds)`` returns True if the run was stopped."""
    try:
        write()                                 # the first attempt: nearly every write ends here
        return
    except WriteError as exc:
        failed = exc
    retry(lambda attempt: write(), WriteError, failed, retries=retries, retry_delay=retry_delay, wait=wait)


def retry(action: Callable[[int], T], error: type[InputError], failed: InputError, *, retries: int,
          retry_delay: float, wait: Callable[[float], bool] | None = None) -> T:
    """After a first attempt failed with ``failed`` (the caller makes it, with nothing around it:
    nearly every attempt works), ``action(attempt)`` from the second on, while it raises ``error``
    caused by a transient errno, up to ``retries`` more attempts with backoff; the last error says
    how many attempts it took."""
    _again_or_raise(failed, 1, retries, retry_delay, wait)
    for attempt in range(2, retries + 2):
        try:
            return action(attempt)
        except error as exc:
            _again_or_raise(exc, attempt, retries, retry_delay, wait)
    raise AssertionError("unreachable")


def _again_or_raise(exc: InputError, attempt: int, retries: int, retry_delay: float,
                    wait: Callable[[float], bool] | None) -> None:
    """After attempt ``attempt`` failed with ``exc``: wait for the next, or raise ``exc`` (not
    transient, no retries left — then it says how many attempts it took — or the run stopped)."""
    cause = exc.__cause__
    transient = isinstance(cause, OSError) and cause.errno in TRANSIENT_ERRNOS
    if not transient or attempt > retries:
        if transient:
            exc.args = (f"{exc} (after {attempt} attempts)",)
        raise exc
    if (wait or _sleep)(backoff(attempt, retry_delay)):
        raise exc


def backoff(attempt: int, retry_delay: float) -> float:
    """Seconds before another try: doubled each attempt, at most 5 s, with jitter."""
    return min(5.0, retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def name_variant(spec: Spec, exc: InputError, variant) -> InputError:
    if len(spec.variants) == 1:
        return exc
    return type(exc)(f"variant {variant.name}: {exc}")


def unexpected(exc: Exception) -> InputError:
    return InternalError(f"unexpected {exc.__class__.__name__}: {exc}")
