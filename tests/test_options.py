"""Run options are defined once (gpupipe/options.py): the CLI's flags, gpupipe.run's keywords and
the GPUPIPE_* environment variables all come from that one definition, with the same defaults."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import gpupipe
from gpupipe import ops, options
from gpupipe.cli import app
from gpupipe.engine.options import RunOptions
from gpupipe.errors import UsageError

from tests.support import REPO_ROOT
from tests.support.cli import example_photos


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return example_photos(tmp_path / "in", {"a.jpg": "Landscape_1.jpg"})


def test_the_cli_the_api_and_the_engine_share_each_default() -> None:
    command = typer.main.get_command(app).commands["run"]
    by_flag = {param.name: param for param in command.params}
    for name, option in options.registry().items():
        if option.flags:
            cli_default = by_flag[name].default
            assert cli_default in (option.default, None, str(option.default)), name
            assert by_flag[name].envvar == f"GPUPIPE_{name.upper()}"
    engine = RunOptions(workers=1)
    for field in dataclasses.fields(RunOptions):
        if field.name in options.registry() and field.name not in ("workers", "max_memory", "journal"):
            assert getattr(engine, field.name) == options.registry()[field.name].default, field.name


def test_every_api_option_is_documented_in_the_options_table() -> None:
    from gpupipe.reference import options_table
    table = options_table()
    for name, option in options.registry().items():
        assert (f"`{name}`" if option.api else "(CLI only)") in table


def test_a_misspelt_keyword_is_a_usage_error_with_a_suggestion(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no option 'workrs' \(did you mean 'workers'\?\)"):
        gpupipe.run(photos, tmp_path / "out", [ops.Grayscale()], workrs=2)
    with pytest.raises(UsageError, match="option of the command line"):
        gpupipe.run(photos, tmp_path / "out", [ops.Grayscale()], quiet=True)
    assert not (tmp_path / "out").exists()


def test_the_environment_sets_what_the_api_is_not_told(photos: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPIPE_JOURNAL", "0")
    monkeypatch.setenv("GPUPIPE_BACKEND", "cpu")
    result = gpupipe.run(photos, tmp_path / "out", [ops.Thumbnail(32)])
    assert result.exit_code == 0 and result.summary.backend.startswith("cpu")
    assert not (tmp_path / "out" / ".gpupipe" / "journal.sqlite").exists()        # GPUPIPE_JOURNAL=0
    with_journal = gpupipe.run(photos, tmp_path / "again", [ops.Thumbnail(32)], journal=True)   # a keyword wins
    assert with_journal.exit_code == 0 and (tmp_path / "again" / ".gpupipe" / "journal.sqlite").exists()
    monkeypatch.setenv("GPUPIPE_WORKERS", "none")
    with pytest.raises(UsageError, match="GPUPIPE_WORKERS takes a whole number, got 'none'"):
        gpupipe.run(photos, tmp_path / "third", [ops.Thumbnail(32)])


def test_the_environment_sets_cli_options_too(photos: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "GPUPIPE_FORMAT": "png", "GPUPIPE_BACKEND": "cpu", "GPUPIPE_QUIET": "1"}
    run = [sys.executable, "-m", "gpupipe", "run", str(photos), "-o", str(tmp_path / "out"), "--thumbnail", "32"]
    done = subprocess.run(run, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "a.png").exists() and done.stderr == ""           # png, and quiet
    flag_wins = subprocess.run([*run, "-f", "webp", "-o", str(tmp_path / "webp")], env=env, capture_output=True,
                               text=True, cwd=REPO_ROOT)
    assert flag_wins.returncode == 0 and (tmp_path / "webp" / "a.webp").exists()
    bad = subprocess.run([*run[:-4], str(photos), "-o", str(tmp_path / "bad"), "--thumbnail", "32"],
                         env={**env, "GPUPIPE_WORKERS": "0"}, capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "GPUPIPE_WORKERS must be a whole number ≥ 1, got 0" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name, text, expected", [
    ("max_memory", "2G", 2 * 2**30), ("max_memory", "auto", None), ("journal", "no", False),
    ("journal", "j.sqlite", Path("j.sqlite")), ("force", "yes", True), ("stall_timeout", "1.5", 1.5),
    ("backend", "gpu", "gpu"),
])
def test_text_values_parse_as_the_option_says(name: str, text: str, expected: object) -> None:
    assert options.from_text(options.registry()[name], text) == expected


@pytest.mark.parametrize("name, value, message", [
    ("workers", 0, "workers (--workers) must be a whole number ≥ 1"),
    ("stall_timeout", float("inf"), "must be a finite number"),
    ("order", "random", "order (--order) must be one of input"),
    ("backend", "gpus", "did you mean 'gpu'?"),
    ("retries", True, "must be a whole number, got True"),
])
def test_bad_values_name_the_option_and_its_flag(name: str, value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        options.resolve({name: value}, environ={})
