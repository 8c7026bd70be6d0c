"""A Python process in which some modules cannot be imported, as on a machine without an extra."""

from __future__ import annotations

import os
from pathlib import Path

from . import REPO_ROOT


def env_without(modules: tuple[str, ...], folder: Path) -> dict[str, str]:
    """An environment whose Python refuses to import ``modules`` (a sitecustomize in ``folder``
    raises ModuleNotFoundError for them, as a missing package would) and imports gpupipe from here."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(modules)!r}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{REPO_ROOT}"}
