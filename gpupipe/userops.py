"""User code as ops: finding the function a ``python`` op names, and running host ops on images.

``load_function`` imports ``package.module:function`` (from sys.path and the current folder) or
``path/to/file.py:function`` once per process; the run checks each one before any work
(``Spec.check_resources``) and hashes its source into the spec's hash, so a re-run after the
code changed redoes the inputs. ``run_host_op`` is what the engine calls per image: it turns what
user code does — an image back, ``Tagged``, ``Reject``, an exception, something else — into
an image and tags, or the input's verdict.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import digests, pixels
from .errors import Rejected, UsageError, UserCodeFailed
from .ops import HostOp, Reject, Tagged

TRACEBACK_LINES = 40          # the end of the user's traceback kept in the message


@functools.cache
def load_function(name: str) -> Callable[..., Any]:
    """The callable ``name`` names; UsageError saying what is wrong otherwise."""
    where, _, attribute = name.rpartition(":")
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where).resolve()
            if not path.is_file():
                raise UsageError(f"python op {name}: no file {path}")
            module_name = f"gpupipe_user_{digests.blake2b(str(path).encode(), digest_size=6).hexdigest()}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)        # type: ignore[arg-type]
            sys.modules[module_name] = module
            spec.loader.exec_module(module)                        # type: ignore[union-attr]
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())        # `gpupipe run` in a project folder finds its modules
            module = importlib.import_module(where)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"python op {name}: cannot import {where}: {exc.__class__.__name__}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UsageError(f"python op {name}: {where} has no function {attribute!r}")
    return function


def source_digest(name: str) -> str:
    """A digest of the source file the function lives in (without importing it when it can be
    found without), for the spec's hash: edited code means a new spec."""
    where = name.rpartition(":")[0]
    try:
        if where.endswith(".py") or os.sep in where:
            origin = str(Path(where).resolve())
        else:
            found = importlib.util.find_spec(where)
            origin = found.origin if found is not None else None
        if origin is None or not os.path.isfile(origin):
            return "no source file"
        with open(origin, "rb") as f:
            return digests.blake2b(f.read(), digest_size=16).hexdigest()
    except (ImportError, ValueError, OSError) as exc:
        return f"unreadable: {exc}"


def run_host_op(op: HostOp, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """``op`` on one host image: the image it gives and its tags (empty when none). Raises
    Rejected (the input writes nothing) or UserCodeFailed (with the user's traceback)."""
    try:
        returned = op.run(image)
    except Reject as verdict:
        raise Rejected(verdict.reason) from None
    except Exception as exc:
        raise UserCodeFailed(f"{op.name} op {_label(op)} raised {exc.__class__.__name__}: {exc}\n"
                             f"{_user_traceback(exc)}") from None
    tags: dict[str, Any] = {}
    if isinstance(returned, Tagged):
        returned, tags = returned.image, dict(returned.tags)
    return _checked_image(op, returned), tags


def _checked_image(op: HostOp, value: Any) -> np.ndarray:
    """The image a user op gave, as the pixel contract wants it (HWC uint8 or uint16, 1-4 channels)."""
    if not isinstance(value, np.ndarray):
        raise UserCodeFailed(f"{op.name} op {_label(op)} returned {type(value).__name__}, not an image "
                             "(a NumPy array, or gpupipe.Tagged(image, tags))")
    if value.ndim == 2:
        value = value[:, :, None]
    if value.ndim != 3 or value.shape[2] not in (1, 2, 3, 4) or 0 in value.shape[:2]:
        raise UserCodeFailed(f"{op.name} op {_label(op)} returned an array of shape {value.shape}: an image "
                             "is H×W or H×W×C with 1 to 4 channels")
    if value.dtype not in pixels.DTYPES:
        raise UserCodeFailed(f"{op.name} op {_label(op)} returned {value.dtype} pixels: return uint8 (0-255) "
                             "or uint16 (0-65535)")
    return np.ascontiguousarray(value)


def _label(op: HostOp) -> str:
    return getattr(op, "function", None) or type(op).__name__


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's frames on (gpupipe's own frames left out), its last lines."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.abspath(__file__))
    while frames and os.path.abspath(frames[0].filename).startswith(here):
        frames.pop(0)
    lines = "".join(traceback.format_list(frames)).rstrip().splitlines()
    return "Traceback (most recent call last):\n" + "\n".join(lines[-TRACEBACK_LINES:])
