"""gpupipe: process whole directories of images, on a CUDA GPU or the CPU, with the same results."""

from . import ops
from .api import apply, run
from .engine.cancel import CancelToken
from .engine.results import FileOutcome, RunResult, RunSummary
from .errors import GpupipeError, InputError, SystemFailure, UsageError
from .ops import Reject, Tagged
from .spec import Spec, Variant

__version__ = "0.1.0"
__all__ = ["ops", "run", "apply", "Spec", "Variant", "CancelToken", "RunResult", "RunSummary", "FileOutcome",
           "GpupipeError", "InputError", "UsageError", "SystemFailure", "Reject", "Tagged", "__version__"]
