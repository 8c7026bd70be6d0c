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
    error_class = "unreadable"        # permission denied, I/O error, vanished while queued


class EmptyInput(InputError):
    error_class = "empty"             # zero-byte file


class NotAnImage(InputError):
    error_class = "not_an_image"      # bytes match no image format we know


class UnsupportedFormat(InputError):
    error_class = "unsupported"       # an image, but not one we read (e.g. HEIC, SVG)


class CorruptImage(InputError):
    error_class = "corrupt"           # header or data is invalid


class TruncatedImage(InputError):
    error_class = "truncated"         # data ends before the image does


class ImageTooLarge(InputError):
    error_class = "too_large"         # declared size above --max-pixels (decompression bomb)


class ProcessingError(InputError):
    error_class = "processing"        # an op failed on this image (e.g. crop outside it)


class OutputConflict(InputError):
    error_class = "output_conflict"   # another input already writes this output path


class OutputExists(InputError):
    error_class = "output_exists"     # a file gpupipe did not write is at the output path (kept; --overwrite replaces)


class BadOutputName(InputError):
    error_class = "bad_output_name"   # the name template made no valid path strictly inside OUT for this input


class WriteError(InputError):
    error_class = "write_error"       # this output could not be written


class StageStalled(InputError):
    error_class = "stalled"           # its thread made no progress for --stall-timeout (hung read, deadlock)


class WorkerCrashed(InputError):
    error_class = "crashed"           # the worker process died on this input (a codec crash, the OOM killer)


class InternalError(InputError):
    error_class = "internal"          # a bug in gpupipe or a library met on this input


class StoppedBySystemFailure(InputError):
    error_class = "system"            # the input was being written when the output side failed


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
