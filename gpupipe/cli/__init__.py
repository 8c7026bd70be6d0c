"""The command line: `gpupipe run`, `inspect`, `report`, `ops` and `doctor`.

``app`` is the typer application; ``run``'s flags are generated from the op registry
(gpupipe/ops.py, through ``opflags``) and the options registry (gpupipe/options.py).
"""

from . import commands, run  # noqa: F401  (each registers its commands on the app)
from .app import app, main

__all__ = ["app", "main"]
