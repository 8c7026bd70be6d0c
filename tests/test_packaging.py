"""The package ships what it needs: every subpackage, and the CUDA sources as gpupipe.kernels."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    assert backend.kernel_sources() == Path(__file__).resolve().parent.parent / "kernels"
