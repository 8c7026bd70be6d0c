"""Running the `gpupipe` command in tests: in this process (typer's runner) on example photos."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from gpupipe.cli import app

from . import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
_runner = CliRunner()


def gp(*args: object):
    """`gpupipe ARGS` in this process: the result's exit_code and output (stdout and stderr)."""
    return _runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def example_photos(folder: Path, names: dict[str, str]) -> Path:
    """``folder`` holding copies of example photos: {name in the folder: example file name}."""
    for name, example in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / example, folder / name)
    return folder
