"""The package ships what it needs: every subpackage, the CUDA sources as gpupipe.kernels, its
type hints and licence; and a wheel built from the checkout runs the quick start on its own."""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from tests.support import REPO_ROOT

ROOT = REPO_ROOT


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gpupipe").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_kernel_sources_are_package_resources() -> None:
    names = {p.name for p in importlib.resources.files("gpupipe.kernels").iterdir()}
    on_disk = {p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh")}
    assert on_disk and on_disk <= names


def test_cuda_kernels_are_found_from_a_source_tree_too(monkeypatch) -> None:
    """On PYTHONPATH from a checkout (a GPU machine without an install), gpupipe.kernels is not a
    package: the backend then reads the checkout's kernels/ directly."""
    import importlib.resources

    from gpupipe.backends.cuda import backend

    installed = backend.kernel_sources()
    assert (installed / "resample.cu").is_file()

    def no_package(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", no_package)
    assert backend.kernel_sources() == REPO_ROOT / "kernels"


def test_a_wheel_built_from_the_checkout_runs_the_quick_start_on_its_own(tmp_path: Path) -> None:
    """``pip wheel`` the checkout, install the wheel (its dependencies are this environment's) into
    a folder, and run the README's quick start from elsewhere: what a user's ``pip install``
    gets is enough, with nothing read from the checkout."""
    try:      # the build backend and bdist_wheel, used without build isolation (no network)
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"{exc.name} is not installed here (the test extras have it): the wheel cannot be built offline")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    [built] = wheels.glob("gpupipe-*.whl")
    names = set(zipfile.ZipFile(built).namelist())
    assert {"gpupipe/py.typed", "gpupipe/kernels/gpupipe.cuh", "gpupipe/engine/unit.py"} <= names
    assert any(name.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in name for name in names), sorted(names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(built)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import gpupipe; print(gpupipe.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where                       # the wheel's, not the checkout's
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(ROOT / "examples" / "photos"), "-o",
                           str(tmp_path / "out"), "--thumbnail", "256", "--format", "webp", "--quality", "85",
                           "--quiet"], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    made = [p.name for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert made and len(made) == len([p for p in (ROOT / "examples" / "photos").iterdir()
                                      if p.suffix.lower() in (".jpg", ".png")])
