"""User ops: a Python function (or a plug-in's HostOp) on each image, on real photos through real
runs — images back, tags, rejections, errors in user code, plug-ins found through entry points."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpupipe
from gpupipe import ops
from gpupipe.errors import Rejected, UsageError
from gpupipe.journal import Journal, default_path

from tests.support import REPO_ROOT
from tests.support.cli import example_photos
from tests.support.devices import StandInDevice, run_on

MODERATION = textwrap.dedent("""
    import gpupipe

    def moderate(image, limit=200, label="bright"):
        mean = float(image[..., :3].mean())
        if mean > limit:
            raise gpupipe.Reject(f"too {label} ({mean:.0f} > {limit})")
        return gpupipe.Tagged(image[:, ::-1], {"mean": round(mean, 1)})

    def half(image):
        return image[::2, ::2]

    def broken(image):
        return {}["no such key"]

    def wrong(image, what="none"):
        return {"none": None, "float": image.astype("float32"), "shape": image[..., 0][None]}[what]
""")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Two real photos and a white image that the moderation function rejects."""
    folder = example_photos(tmp_path / "in", {"a.jpg": "Landscape_1.jpg", "c.png": "chapel.png"})
    Image.new("RGB", (64, 48), (250, 250, 250)).save(folder / "white.png")
    return folder


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "moderation.py").write_text(MODERATION)
    return tmp_path / "moderation.py"


def test_a_function_in_a_spec_file_flips_tags_and_rejects(inputs: Path, code: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('[[variant]]\nformat = "png"\n'
                    'ops = [{ op = "thumbnail", size = 64 }, { op = "python", function = "moderation.py:moderate", '
                    'limit = 180 }]\n')
    metrics = tmp_path / "m.prom"
    result = gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu", metrics_file=metrics)
    by_name = {Path(o.path).name: o for o in result.outcomes}
    assert (result.exit_code, result.summary.processed, result.summary.rejected) == (0, 2, 1)
    white = by_name["white.png"]
    assert white.status == "rejected" and white.message == "too bright (250 > 180)" and white.outputs == []
    assert not (tmp_path / "out" / "white.png").exists()
    photo = by_name["a.jpg"]
    assert photo.status == "ok" and set(photo.tags) == {"mean"}
    gpupipe.run(inputs / "a.jpg", tmp_path / "ref", gpupipe.Spec.single([ops.Thumbnail(64)], format="png"),
                backend="cpu", journal=False)
    expected = np.asarray(Image.open(tmp_path / "ref" / "a.png"))[:, ::-1]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected)     # the function's image
    assert 'gpupipe_files_total{status="rejected"} 1.0' in metrics.read_text()
    with sqlite3.connect(default_path(tmp_path / "out")) as db:
        rows = dict(db.execute("SELECT state || ':' || COALESCE(message, ''), tags FROM inputs"))
    assert rows["rejected:too bright (250 > 180)"] is None
    assert json.loads(rows["ok:"]).keys() == {"mean"}
    again = gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu")
    assert (again.summary.skipped, again.summary.processed, again.summary.rejected) == (3, 0, 0)
    assert "rejected before" in {Path(o.path).name: o for o in again.outcomes}["white.png"].message


def test_edited_code_is_a_new_spec(inputs: Path, code: Path, tmp_path: Path) -> None:
    """The spec's hash covers the function's source: after an edit, a re-run redoes the inputs."""
    spec = gpupipe.Spec.single([ops.Python(f"{code}:half")], format="png")
    assert gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu").summary.processed == 3
    assert gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu").summary.skipped == 3
    code.write_text(MODERATION + "\n# edited\n")
    assert gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu").summary.processed == 3


def test_an_error_in_user_code_fails_that_input_with_the_users_traceback(inputs: Path, code: Path,
                                                                        tmp_path: Path) -> None:
    spec = gpupipe.Spec((gpupipe.Variant((ops.Python(f"{code}:broken"),), name="bad"),
                         gpupipe.Variant((ops.Thumbnail(32),), name="good")))
    result = gpupipe.run(inputs, tmp_path / "out", spec, backend="cpu")
    assert result.exit_code == 1 and result.summary.failures_by_class == {"user_code": 3}
    failure = result.outcomes[0]
    assert "raised KeyError: 'no such key'" in failure.message
    assert f'File "{code}", line' in failure.message and 'return {}["no such key"]' in failure.message
    assert "gpupipe/" not in failure.message.split("Traceback", 1)[1]       # the user's frames, not ours
    assert len(list((tmp_path / "out").glob("*_good.*"))) == 3              # the other variant is written


@pytest.mark.parametrize("what, message", [("none", "returned NoneType, not an image"),
                                           ("float", "returned float32 pixels: return uint8"),
                                           ("shape", "returned an array of shape")])
def test_what_is_not_an_image_is_a_clear_failure(inputs: Path, code: Path, tmp_path: Path, what: str,
                                                 message: str) -> None:
    spec = gpupipe.Spec.single([ops.Python(f"{code}:wrong", {"what": what})])
    result = gpupipe.run(inputs / "c.png", tmp_path / "out", spec, backend="cpu")
    (outcome,) = result.outcomes
    assert outcome.error_class == "user_code" and message in outcome.message


def test_a_function_that_cannot_be_found_stops_before_any_work(inputs: Path, code: Path, tmp_path: Path) -> None:
    for function, says in ((f"{code}:nosuch", "has no function 'nosuch'"),
                           ("no_such_module_here:f", "cannot import no_such_module_here"),
                           (f"{tmp_path}/missing.py:f", "no file")):
        with pytest.raises(UsageError, match=says):
            gpupipe.run(inputs, tmp_path / "out", [ops.Python(function)], backend="cpu")
    assert not (tmp_path / "out").exists()


def test_the_command_line_calls_a_module_from_the_current_folder(inputs: Path, code: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(inputs), "-o", "out", "--thumbnail", "64",
                           "--python", "moderation:moderate", "--python-arguments", 'limit = 100; label = "light"',
                           "--report", "r.json", "--backend", "cpu"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    assert "rejected" in done.stderr
    files = {Path(f["path"]).name: f for f in json.loads((tmp_path / "r.json").read_text())["files"]}
    assert files["white.png"]["status"] == "rejected" and "too light" in files["white.png"]["message"]
    assert {name for name, f in files.items() if f["status"] == "ok"} <= {"a.jpg", "c.png"}


def test_a_batch_on_a_device_leaves_it_for_user_code_and_comes_back(inputs: Path, code: Path, tmp_path: Path) -> None:
    """On a device (the stand-in: batches of up to 8) the batch is downloaded for the function and
    its results uploaded again; the outputs equal the CPU backend's."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10):
        Image.open(inputs / "a.jpg").save(many / f"{i}.jpg")
    spec = gpupipe.Spec.single([ops.Thumbnail(80), ops.Python(f"{code}:half"), ops.Grayscale()], format="png")
    device = run_on(StandInDevice, spec, many, tmp_path / "device")
    cpu = gpupipe.run(many, tmp_path / "cpu", spec, backend="cpu")
    assert device.summary.processed == cpu.summary.processed == 10
    for path in (tmp_path / "cpu").glob("*.png"):
        assert path.read_bytes() == (tmp_path / "device" / path.name).read_bytes()
        assert Image.open(path).size == (40, 27)


def test_apply_runs_user_code_and_raises_a_rejection(code: Path) -> None:
    dark = np.full((10, 20, 3), 30, np.uint8)
    dark[:, 0] = 90
    flipped = gpupipe.apply([ops.Python(f"{code}:moderate")], dark)
    assert flipped[0, -1, 0] == 90
    with pytest.raises(Rejected, match="too bright"):
        gpupipe.apply([ops.Python(f"{code}:moderate", {"limit": 10})], dark)


def test_a_plugin_registers_an_op_through_an_entry_point(inputs: Path, tmp_path: Path) -> None:
    """A real distribution on sys.path declaring [gpupipe.ops]: its op works in spec files and
    `gpupipe ops` lists it."""
    site = tmp_path / "site"
    (site / "stampop-1.0.dist-info").mkdir(parents=True)
    (site / "stampop-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: stampop\nVersion: 1.0\n")
    (site / "stampop-1.0.dist-info" / "entry_points.txt").write_text("[gpupipe.ops]\nstamp = stampop:Stamp\n")
    (site / "stampop.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from typing import ClassVar
        from gpupipe.ops import HostOp, param

        @dataclass(frozen=True)
        class Stamp(HostOp):
            name: ClassVar[str] = "stamp"
            summary: ClassVar[str] = "Paint the top-left corner."
            value: int = param(0, "the corner's grey level", least=0, most=255)

            def run(self, image):
                image = image.copy()
                image[:4, :4] = self.value
                return image
    """))
    (tmp_path / "spec.toml").write_text('ops = [{ op = "stamp", value = 7 }]\nformat = "png"\n')
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{site}"}
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(inputs / "c.png"), "-o", str(tmp_path / "out"),
                           "--spec", str(tmp_path / "spec.toml"), "--backend", "cpu"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "c.png"))[0, 0, 0] == 7
    listed = subprocess.run([sys.executable, "-m", "gpupipe", "ops", "stamp"], capture_output=True, text=True,
                            env=env)
    assert listed.returncode == 0 and "Paint the top-left corner." in listed.stdout and "(spec files only)" in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "gpupipe", "ops", "stamp"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert bad.returncode == 2 and "unknown op 'stamp'" in bad.stderr


def test_a_version_1_journal_gains_tags_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE inputs (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL,
                spec_hash TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                error_class TEXT, message TEXT, updated REAL NOT NULL);
            CREATE TABLE outputs (path BLOB PRIMARY KEY, input_path BLOB NOT NULL, size INTEGER NOT NULL,
                checksum TEXT NOT NULL);
            CREATE TABLE runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL,
                spec_hash TEXT NOT NULL, summary TEXT);
            INSERT INTO inputs VALUES (X'2f612e6a7067', 10, 1.0, 'h', 'failed', 1, 'corrupt', 'bad', 5.0);
            PRAGMA user_version = 1;
        """)
    Journal(path, "h").close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT state, message, tags FROM inputs").fetchall() == [("failed", "bad", None)]
