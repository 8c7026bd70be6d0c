"""Error vocabulary shared by every stage.

Per-file problems raise an ``InputError`` subclass; the engine records the
``error_class`` and message against that one input and moves on. Problems with
the run itself (bad flags, unwritable output disk) are ``UsageError`` or
``SystemFailure`` and stop the run with one clear message.
"""

from __future__ import annotations


class GpupipeError(Exception):
    """Base class for every error gpupipe raises on purpose."""


class UsageError(GpupipeError):
    """The command line, spec or API call is wrong; the message says what to fix (exit 2)."""


class SystemFailure(GpupipeError):
    """The machine, not an input, failed (disk full, read-only output, GPU lost)."""


class DeviceFailure(SystemFailure):
    """The GPU itself failed a batch (lost device, driver error): not the images' fault.
    The engine retries the batch and, if the device keeps failing, moves the run to the CPU."""


class DeviceOutOfMemory(DeviceFailure):
    """A batch did not fit in GPU memory (or --gpu-memory): the engine splits it and retries."""


class UndecodableImages(GpupipeError):
    """``Backend.upload`` met deferred JPEGs that neither the device nor the host could decode:
    ``errors`` maps their positions in the batch to the InputError each one gets. The batch's
    other images are fine; the engine fails these alone and uploads the rest again."""

    def __init__(self, errors: dict[int, "InputError"]) -> None:
        super().__init__(f"{len(errors)} image(s) of the batch could not be decoded")
        self.errors = errors


class InputError(GpupipeError):
    """One input could not be processed. ``error_class`` groups failures in reports."""

    error_class = "input_error"


class UnreadableInput(InputError):
    """Permission denied, I/O error, vanished while queued."""

    error_class = "unreadable"


class EmptyInput(InputError):
    """Zero-byte file."""

    error_class = "empty"


class NotAnImage(InputError):
    """Bytes match no image format we know."""

    error_class = "not_an_image"


class UnsupportedFormat(InputError):
    """An image, but not one we read (e.g. HEIC, SVG)."""

    error_class = "unsupported"


class CorruptImage(InputError):
    """Header or data is invalid."""

    error_class = "corrupt"


class TruncatedImage(InputError):
    """Data ends before the image does."""

    error_class = "truncated"


class ImageTooLarge(InputError):
    """Declared size above --max-pixels (decompression bomb)."""

    error_class = "too_large"


class ProcessingError(InputError):
    """An op failed on this image (e.g. crop outside it)."""

    error_class = "processing"


class OutputConflict(InputError):
    """Another input already writes this output path."""

    error_class = "output_conflict"


class OutputExists(InputError):
    """A file gpupipe did not write is at the output path (kept; --overwrite replaces)."""

    error_class = "output_exists"


class BadOutputName(InputError):
    """The name template made no valid path strictly inside OUT for this input."""

    error_class = "bad_output_name"


class WriteError(InputError):
    """This output could not be written."""

    error_class = "write_error"


class StageStalled(InputError):
    """Its worker made no progress on it for --stall-timeout (a hung read, a deadlock)."""

    error_class = "stalled"


class WorkerCrashed(InputError):
    """The worker process died on this input (a codec crash, the OOM killer)."""

    error_class = "crashed"


class InternalError(InputError):
    """A bug in gpupipe or a library met on this input."""

    error_class = "internal"


class UserCodeFailed(InputError):
    """A user op (``python``, or one a plug-in registers) raised or returned something that is not
    an image; the message ends with the user's traceback."""

    error_class = "user_code"


class Rejected(InputError):
    """Not a failure: a user op rejected the input (``gpupipe.Reject``), so it writes no output.
    Its outcome's status is ``rejected`` and the message is the reason; this class carries that
    verdict through the ops to the outcome."""

    error_class = "rejected"


class StoppedBySystemFailure(InputError):
    """The input was being written when the output side failed."""

    error_class = "system"


def input_error(error_class: str, message: str) -> InputError:
    """Rebuild a per-file error from its class name and message (after crossing a process boundary)."""
    stack: list[type[InputError]] = [InputError]
    while stack:
        cls = stack.pop()
        if cls.error_class == error_class:
            return cls(message)
        stack.extend(cls.__subclasses__())
    error = InputError(message)
    error.error_class = error_class
    return error


def did_you_mean(given: object, choices) -> str:
    """" (did you mean 'webp'?)" when ``given`` is a near miss of one of ``choices`` (a typo such
    as 'wepb' or 'bottom-rigth'), else "": for the end of a UsageError's message."""
    import difflib
    close = difflib.get_close_matches(str(given).strip().lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
