"""The docs say what the code does: generated tables are current, links resolve inside the
repository, and nothing points outside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpupipe import reference
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def test_the_readmes_op_table_is_what_gpupipe_ops_prints() -> None:
    printed = subprocess.run([sys.executable, "-m", "gpupipe", "ops", "--markdown"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert printed == reference.ops_table()
    assert reference.between_markers((ROOT / "README.md").read_text(), "ops table") == printed, \
        "README.md's ops table is stale: paste `gpupipe ops --markdown` between its markers"


def test_the_error_class_table_lists_every_class() -> None:
    text = (ROOT / "docs" / "usage.md").read_text()
    assert reference.between_markers(text, "error classes") == reference.error_classes_table(), \
        "docs/usage.md's error classes are stale: paste gpupipe.reference.error_classes_table() between its markers"
    assert "`crashed`" in reference.error_classes_table() and "`output_exists`" in reference.error_classes_table()


def test_the_formats_table_is_the_codecs_table() -> None:
    text = (ROOT / "docs" / "usage.md").read_text()
    assert reference.between_markers(text, "formats") == reference.formats_table(), \
        "docs/usage.md's formats are stale: paste gpupipe.reference.formats_table() between its markers"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    for target in re.findall(r"(?:\.\./)+[\w.-][\w./-]*", text):      # every relative path the text names
        assert (doc.parent / target).resolve().is_relative_to(ROOT), \
            f"{doc.name} points outside the repository: {target}"
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" in target:
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.exists() and resolved.is_relative_to(ROOT), f"{doc.name}: broken link {target}"


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_options_table_is_the_options_registry() -> None:
    text = (ROOT / "docs" / "usage.md").read_text()
    assert reference.between_markers(text, "options") == reference.options_table(), \
        "docs/usage.md's options are stale: paste gpupipe.reference.options_table() between its markers"
    assert "`GPUPIPE_WORKERS`" in reference.options_table()
