"""gpupipe: process whole directories of images, on a CUDA GPU or the CPU, with the same results."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use (PEP 562): `import gpupipe.cli`
# then sets the CLI process's defaults before NumPy loads (gpupipe/cli/__init__.py), and a command
# that needs no engine loads none of it.
_EXPORTS = {
    "ops": None,
    "run": "api", "apply": "api",
    "Spec": "spec", "Variant": "spec",
    "CancelToken": "engine.cancel",
    "RunResult": "engine.results", "RunSummary": "engine.results", "FileOutcome": "engine.results",
    "GpupipeError": "errors", "InputError": "errors", "UsageError": "errors", "SystemFailure": "errors",
    "Reject": "ops", "Tagged": "ops",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpupipe' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = importlib.import_module(f".{module or name}", __name__)
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from . import ops
    from .api import apply, run
    from .engine.cancel import CancelToken
    from .engine.results import FileOutcome, RunResult, RunSummary
    from .errors import GpupipeError, InputError, SystemFailure, UsageError
    from .ops import Reject, Tagged
    from .spec import Spec, Variant
