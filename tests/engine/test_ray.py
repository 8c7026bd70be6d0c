"""The Ray engine against a real local Ray cluster: same outputs as the local engine,
failures isolated, cancel and resume through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpupipe
from gpupipe import ops
from gpupipe.journal import default_path

from tests.support.badfiles import make_bad_inputs
from tests.test_journal import committed_inputs, make_inputs
from tests.support import REPO_ROOT

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'gpupipe[ray]')")

EXAMPLES = REPO_ROOT / "examples" / "photos"
SPEC = gpupipe.Spec((gpupipe.Variant((ops.Thumbnail(96), ops.Sharpen()), name="web", format="webp"),
                     gpupipe.Variant((ops.Grayscale(), ops.Thumbnail(48)), name="small", format="png")))


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the in-process tests (starting one takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    yield
    ray.shutdown()


def _inputs(tmp_path: Path, copies: int = 2) -> Path:
    src = tmp_path / "in"
    (src / "bad").mkdir(parents=True)
    for photo in EXAMPLES.iterdir():
        if photo.suffix.lower() in (".jpg", ".jpeg", ".png"):
            for i in range(copies):
                shutil.copy(photo, src / f"{photo.stem}-{i}{photo.suffix}")
    make_bad_inputs(src / "bad")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".gpupipe" not in p.parts}


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path: Path, cluster) -> None:
    src = _inputs(tmp_path)
    local = gpupipe.run(src, tmp_path / "local", SPEC, backend="cpu", workers=2)
    distributed = gpupipe.run(src, tmp_path / "ray", SPEC, backend="cpu", workers=2, engine="ray")
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")          # byte for byte
    assert len(_files(tmp_path / "ray")) >= 12
    def fates(result):
        return {Path(o.path).name: (o.status, o.error_class) for o in result.outcomes}
    assert fates(distributed) == fates(local)                              # every bad file fails alike, alone
    assert distributed.summary.failed == local.summary.failed > 0
    assert distributed.exit_code == local.exit_code == 1
    assert "Ray" in distributed.summary.backend
    ok = next(o for o in distributed.outcomes if o.status == "ok")
    assert set(ok.seconds) == {"read", "decode", "process", "encode", "write"} and len(ok.output_checksums) == 2
    # The journal saw each input exactly once: a second run skips them all.
    again = gpupipe.run(src, tmp_path / "ray", SPEC, backend="cpu", workers=2, engine="ray")
    assert again.summary.skipped == len(again.outcomes) and again.summary.processed == 0


def test_a_listing_goes_to_ray_in_many_chunks_each_input_once(tmp_path: Path, cluster) -> None:
    """Chunks of 4 inputs: more chunks than Ray has room for at once, handed out as others end."""
    from gpupipe.engine.options import RunOptions
    from gpupipe.engine.ray_engine import RayEngine
    src = _inputs(tmp_path, copies=3)
    result = RayEngine(SPEC, "cpu", RunOptions(workers=2), chunk_files=4).run([src], tmp_path / "out")
    reference = gpupipe.run(src, tmp_path / "local", SPEC, backend="cpu", workers=2, journal=False)
    assert result.summary.processed == reference.summary.processed and result.summary.done == len(result.outcomes)
    assert _files(tmp_path / "out") == _files(tmp_path / "local")


def test_the_gpu_operator_shape_on_cpu_actors(tmp_path: Path, cluster) -> None:
    """read+decode tasks → process actors → encode+write tasks, as a GPU cluster runs it (pixels
    cross Ray's object store as ragged tensors): the same files as the local engine."""
    from gpupipe.engine.options import RunOptions
    from gpupipe.engine.ray_engine import RayEngine
    src = _inputs(tmp_path)
    result = RayEngine(SPEC, "cpu", RunOptions(workers=2), actor_stages=True).run([src], tmp_path / "out")
    reference = gpupipe.run(src, tmp_path / "local", SPEC, backend="cpu", workers=2, journal=False)
    assert _files(tmp_path / "out") == _files(tmp_path / "local")
    fates = {Path(o.path).name: (o.status, o.error_class) for o in result.outcomes}
    assert fates == {Path(o.path).name: (o.status, o.error_class) for o in reference.outcomes}
    ok = next(o for o in result.outcomes if o.status == "ok")
    assert set(ok.seconds) == {"read", "decode", "process", "encode", "write"}


def test_metrics_and_report_from_a_ray_run(tmp_path: Path, cluster) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    src = _inputs(tmp_path, copies=1)
    result = gpupipe.run(src, tmp_path / "out", SPEC, backend="cpu", workers=2, engine="ray",
                         metrics_file=tmp_path / "run.prom")
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families((tmp_path / "run.prom").read_text())
             for s in family.samples}
    assert found[("gpupipe_files_total", (("status", "ok"),))] == result.summary.processed > 0
    assert found[("gpupipe_files_total", (("status", "failed"),))] == result.summary.failed > 0
    assert found[("gpupipe_stage_seconds_count", (("stage", "encode"),))] == result.summary.processed


def _cli(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--engine", "ray", "--workers", "2",
            "--blur", "2", "-f", "png", "--quiet", *extra]


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.png"))


def _kill_tree(proc: subprocess.Popen, signum: int) -> None:
    """The CLI's local Ray cluster runs in its process group: kill them together."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_killed_ray_run_resumes_with_every_output_exactly_once(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 60), tmp_path / "out"
    proc = subprocess.Popen(_cli(src, out), start_new_session=True)
    try:
        _wait_for(lambda: committed_inputs(default_path(out)) >= 3 or proc.poll() is not None)
    finally:
        _kill_tree(proc, signal.SIGKILL)
        proc.wait(timeout=60)
    recorded = committed_inputs(default_path(out))
    assert 3 <= recorded < 60, recorded
    resumed = subprocess.run(_cli(src, out, "--report", str(tmp_path / "r.json")), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["skipped"] == recorded and summary["processed"] == 60 - recorded
    assert _outputs(out) == [f"{i:03d}.png" for i in range(60)]
    assert not list(out.rglob(".*.tmp"))


def test_first_ctrl_c_drains_a_ray_run_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 60), tmp_path / "out"
    report = tmp_path / "r.json"
    proc = subprocess.Popen(_cli(src, out, "--report", str(report)), start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_outputs(out)) >= 2 or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        _kill_tree(proc, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    summary = json.loads(report.read_text())["summary"]
    assert summary["interrupted"] and summary["processed"] + summary["cancelled"] == 60
    assert summary["cancelled"] > 0 and summary["processed"] == len(_outputs(out))
    assert not list(out.rglob(".*.tmp"))
    rerun = subprocess.run(_cli(src, out, "--report", str(report)), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _outputs(out) == [f"{i:03d}.png" for i in range(60)]


def test_user_code_on_a_ray_cluster_rejects_and_tags_as_locally(tmp_path: Path, cluster) -> None:
    """A python op runs in Ray's tasks as in local workers: the same outputs, the same rejections
    and tags, and the journal skips the rejected inputs on the next run."""
    code = tmp_path / "moderation.py"
    code.write_text("import gpupipe\n"
                    "def moderate(image, limit=120):\n"
                    "    mean = float(image[..., :3].mean())\n"
                    "    if mean > limit:\n"
                    "        raise gpupipe.Reject(f'too bright ({mean:.0f})')\n"
                    "    return gpupipe.Tagged(image, {'mean': round(mean)})\n")
    src = _inputs(tmp_path, copies=1)
    spec = gpupipe.Spec.single([ops.Thumbnail(64), ops.Python(f"{code}:moderate")], format="png")
    local = gpupipe.run(src, tmp_path / "local", spec, backend="cpu", workers=2)
    distributed = gpupipe.run(src, tmp_path / "ray", spec, backend="cpu", workers=2, engine="ray")
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")

    def verdicts(result):
        return {Path(o.path).name: (o.status, o.message if o.status == "rejected" else None, o.tags)
                for o in result.outcomes if o.status in ("ok", "rejected")}
    assert verdicts(distributed) == verdicts(local)
    assert distributed.summary.rejected == local.summary.rejected > 0
    assert distributed.summary.processed == local.summary.processed > 0
    again = gpupipe.run(src, tmp_path / "ray", spec, backend="cpu", workers=2, engine="ray")
    assert again.summary.processed == again.summary.rejected == 0


def _magenta_marked(tmp_path: Path, count: int, marked: set[int], action: str) -> tuple[Path, str]:
    """``count`` small PNGs in tmp_path/in, those numbered in ``marked`` magenta, and a python op
    that runs ``action`` (a statement) on a magenta image: the folder and the op's reference."""
    from PIL import Image
    code = tmp_path / "on_magenta.py"
    code.write_text("import os, signal, time\n"
                    "def on_magenta(image):\n"
                    "    if image[0, 0].tolist() == [255, 0, 255]:\n"
                    f"        {action}\n"
                    "    return image\n")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(count):
        colour = (255, 0, 255) if i in marked else (20 * i, 90, 200)
        Image.new("RGB", (40, 30), colour).save(src / f"{i:02d}.png")
    return src, f"{code}:on_magenta"


def test_a_worker_killed_on_an_input_fails_that_input_alone(tmp_path: Path, cluster) -> None:
    """A Ray worker killed on an input (a codec crash, the OOM killer: here SIGKILL from a python op)
    costs that input alone, as with the local engine: its chunk is done again in halves until the
    input is alone. The other inputs' files are the local engine's."""
    src, killer = _magenta_marked(tmp_path, 12, {4, 9}, "os.kill(os.getpid(), signal.SIGKILL)")
    spec = gpupipe.Spec.single([ops.Python(killer)], format="png")
    local = gpupipe.run(src, tmp_path / "local", spec, backend="cpu", workers=2)
    distributed = gpupipe.run(src, tmp_path / "ray", spec, backend="cpu", workers=2, engine="ray")
    assert _files(tmp_path / "ray") == _files(tmp_path / "local") and len(_files(tmp_path / "ray")) == 10

    def fates(result):
        return {Path(o.path).name: (o.status, o.error_class) for o in result.outcomes}
    assert fates(distributed) == fates(local)
    assert {name for name, (_, error) in fates(distributed).items() if error} == {"04.png", "09.png"}
    assert all(error in (None, "crashed") for _, error in fates(distributed).values())
    assert distributed.exit_code == 1 and not distributed.summary.stop_reason
    assert not list((tmp_path / "ray").rglob(".*.tmp"))


def test_second_ctrl_c_aborts_a_ray_run_leaving_no_temporary(tmp_path: Path) -> None:
    """A second Ctrl+C stops at once: the tasks in flight are cancelled mid-chunk and the local
    cluster goes down with them, and none of their temporaries stays; every output there is whole,
    and a rerun finishes the rest."""
    from PIL import Image
    src, out = make_inputs(tmp_path, 60), tmp_path / "out"
    proc = subprocess.Popen(_cli(src, out), start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_outputs(out)) >= 2 or proc.poll() is not None)
        _kill_tree(proc, signal.SIGINT)
        # Apart, as two key presses are: the driver takes a signal between its waits on Ray (50 ms
        # at most), and two that come within one wait are one to Python.
        time.sleep(0.15)
        _kill_tree(proc, signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        _kill_tree(proc, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    assert "aborted" in stderr
    assert not list(out.rglob(".*.tmp"))
    for name in _outputs(out):
        with Image.open(out / name) as image:
            image.load()                                    # whole, not half-written
    rerun = subprocess.run(_cli(src, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _outputs(out) == [f"{i:03d}.png" for i in range(60)]


def test_an_input_stuck_in_a_ray_task_stops_the_run_as_stalled(tmp_path: Path) -> None:
    """An input that holds its task past --stall-timeout (a hung read, a stuck codec) stops the run
    with the reason; the cluster started for the run goes down, and nothing half-written stays."""
    src, hang = _magenta_marked(tmp_path, 6, {3}, "time.sleep(600)")
    out, report = tmp_path / "out", tmp_path / "r.json"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--engine", "ray",
                           "--workers", "2", "--python", hang, "-f", "png", "--quiet",
                           "--stall-timeout", "5", "--report", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and time.monotonic() - started < 120
    summary = json.loads(report.read_text())["summary"]
    assert "stalled: no input came back from Ray" in summary["stop_reason"]
    assert summary["processed"] + summary["cancelled"] == 6 and summary["cancelled"] >= 1
    assert not list(out.rglob(".*.tmp"))
