"""The Python API: run() over directories, apply() on in-memory images."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpupipe
from gpupipe import codecs, ops
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.errors import DeviceFailure, DeviceOutOfMemory, ProcessingError, UsageError

from tests.support.devices import SharedCount, StandInDevice, run_on
from tests.test_journal import make_inputs
from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"


def test_apply_on_arrays_and_pil_images() -> None:
    array = np.zeros((100, 200, 3), np.uint8)
    assert gpupipe.apply(ops.Thumbnail(50), array).shape == (25, 50, 3)
    assert gpupipe.apply([ops.Rotate(90)], array).shape == (200, 100, 3)
    photo = np.asarray(Image.open(EXAMPLES / "Landscape_1.jpg"))
    gray = gpupipe.apply([ops.Grayscale()], photo)
    assert gray.shape == photo.shape[:2]                               # H×W, as NumPy's grey images are
    rgb = np.asarray(Image.fromarray(gray).convert("RGB"))
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert gpupipe.apply([ops.Grayscale()], photo[:, :, :1]).shape == (*photo.shape[:2], 1)   # H×W×1 stays
    pil = gpupipe.apply([ops.Thumbnail(64)], Image.open(EXAMPLES / "chapel.png"))
    assert isinstance(pil, Image.Image) and max(pil.size) == 64


def test_apply_turns_a_pil_image_upright_as_run_does(tmp_path: Path) -> None:
    """Portrait_6.jpg is stored sideways with EXIF Orientation 6: apply() gives what run() writes,
    upright, unless asked for the stored pixels."""
    photo = EXAMPLES / "Portrait_6.jpg"
    spec = gpupipe.Spec.single([ops.Thumbnail(120)], format="png")
    gpupipe.run(photo.parent, tmp_path / "out", spec, backend="cpu", journal=False)
    written = np.asarray(Image.open(tmp_path / "out" / "Portrait_6.png"))
    applied = np.asarray(gpupipe.apply(spec, Image.open(photo)))
    assert applied.shape == written.shape and applied.shape[0] > applied.shape[1]     # portrait, upright
    assert np.abs(applied.astype(int) - written).mean() < 1.0         # the same pixels (decoders agree closely)
    stored = gpupipe.apply(spec, Image.open(photo), exif_orientation=False)
    assert stored.size == (applied.shape[0], applied.shape[1])        # sideways, as stored


def test_apply_with_several_variants_returns_a_dict() -> None:
    spec = gpupipe.Spec((gpupipe.Variant((ops.Thumbnail(32),), name="small"),
                         gpupipe.Variant((ops.Grayscale(),), name="gray")))
    out = gpupipe.apply(spec, np.full((64, 64, 4), 200, np.uint8))
    assert out["small"].shape == (32, 32, 4) and out["gray"].shape == (64, 64, 2)


def test_apply_raises_when_an_op_cannot_apply() -> None:
    with pytest.raises(ProcessingError, match="outside"):
        gpupipe.apply(ops.Crop(0, 0, 500, 500), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(UsageError):
        gpupipe.apply(ops.Sharpen(), np.zeros((10, 10, 3), np.float32))


def test_run_returns_outcomes_and_reports_progress(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 6)
    seen = []
    result = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(64)], backend="cpu", workers=2,
                         on_progress=lambda s: seen.append(s.done))
    assert result.exit_code == 0 and result.summary.processed == 6
    assert len(result.outcomes) == 6 and all(o.status == "ok" for o in result.outcomes)
    assert all(set(o.seconds) >= {"read", "decode", "process", "encode", "write"} for o in result.outcomes)
    # Kept to the clock's precision as they are made; a report shows them to the µs.
    shown = [o.to_dict()["seconds"] for o in result.outcomes]
    assert all(s == round(s, 6) and s >= 0 for stages in shown for s in stages.values())
    assert all(o.to_dict()["seconds"]["write"] == round(o.seconds["write"], 6) for o in result.outcomes)
    assert seen and seen[-1] == 6
    assert result.summary.backend.startswith("cpu")


def test_cancellation_token_stops_a_run(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 40)
    token = gpupipe.CancelToken()
    # Cancelled from another thread, as an application's "stop" button would, while the run is busy.
    threading.Timer(0.3, token.cancel, ("test says stop",)).start()
    result = gpupipe.run(src, tmp_path / "out", [ops.GaussianBlur(3)], backend="cpu", workers=1, cancel=token)
    assert result.summary.processed >= 1
    assert result.summary.processed + result.summary.cancelled <= 40
    assert result.summary.processed < 40
    assert result.summary.stop_reason == "test says stop"
    paths = [o.path for o in result.outcomes]             # every input found has exactly one outcome
    assert len(paths) == len(set(paths)) == result.summary.discovered
    written = [p for p in (tmp_path / "out").iterdir() if p.name != ".gpupipe"]     # not the journal
    assert len(written) == result.summary.processed and not any(p.name.startswith(".") for p in written)


def test_memory_stays_within_a_small_budget_without_deadlock(tmp_path: Path) -> None:
    # A 16 MB budget holds fewer than three decoded 1800×1200 photos: the queues
    # must apply backpressure (and admit one oversized item) rather than hang.
    src = make_inputs(tmp_path, 12)
    result = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", workers=2,
                         max_memory=16 * 2**20)
    assert result.summary.processed == 12


def test_jpeg_quality_and_webp_output(tmp_path: Path) -> None:
    src = EXAMPLES / "chapel.png"
    low = gpupipe.run(src, tmp_path / "q50", gpupipe.Spec.single([], format="jpeg", quality=50), backend="cpu")
    high = gpupipe.run(src, tmp_path / "q95", gpupipe.Spec.single([], format="jpeg", quality=95), backend="cpu")
    assert low.outcomes[0].bytes_out < high.outcomes[0].bytes_out
    webp = gpupipe.run(src, tmp_path / "w", gpupipe.Spec.single([ops.Resize(300, 200, mode="exact")],
                                                                format="webp"), backend="cpu")
    with Image.open(webp.outcomes[0].outputs[0]) as im:
        assert im.format == "WEBP" and im.size == (300, 200)


def test_decode_happens_once_for_all_variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "decodes"             # appended to by whichever process decodes (a worker)
    real = codecs.decode
    def counting(*args, **kwargs):
        with open(calls, "a") as log:
            log.write("decode\n")
        return real(*args, **kwargs)
    monkeypatch.setattr(codecs, "decode", counting)
    spec = gpupipe.Spec(tuple(gpupipe.Variant((ops.Thumbnail(s),), name=f"s{s}") for s in (32, 64, 128)))
    result = gpupipe.run(EXAMPLES / "Landscape_1.jpg", tmp_path / "out", spec, backend="cpu")
    assert result.summary.outputs_written == 3 and calls.read_text() == "decode\n"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 256 KB tmpfs (needs root and mount rights: skipped, saying why, without them)."""
    import subprocess
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_output_disk_stops_the_run_with_one_clear_message(tmp_path: Path, small_disk: Path) -> None:
    import re
    import subprocess
    src = make_inputs(tmp_path, 30)
    spec, journal = gpupipe.Spec.single([], format="png"), tmp_path / "journal.sqlite"
    result = gpupipe.run(src, small_disk, spec, backend="cpu", workers=2, journal=journal)
    assert result.exit_code == 1
    reason = result.summary.stop_reason
    assert "No space left on device" in reason and str(small_disk) in reason
    left = int(re.search(r"(\d+) input\(s\) left to do", reason).group(1))      # how many remain ...
    assert "run the same command again" in reason                              # ... and how to resume
    assert left == 30 - result.summary.processed - result.summary.failures_by_class.get("output_conflict", 0)
    assert result.summary.processed < 30
    assert any(o.error_class == "system" for o in result.outcomes)
    leftovers = [p.name for p in small_disk.iterdir() if p.name.startswith(".") and p.name != ".gpupipe"]
    assert not leftovers, leftovers                 # no temporary left behind
    for path in (p for p in small_disk.iterdir() if p.name != ".gpupipe"):    # whatever was written is whole
        with Image.open(path) as im:
            im.load()
    # Free space and run the same command again: exactly the inputs said to be left are done.
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    resumed = gpupipe.run(src, small_disk, spec, backend="cpu", workers=2, journal=journal)
    assert resumed.exit_code == 0
    assert resumed.summary.processed == left and resumed.summary.skipped == 30 - left
    assert sorted(p.name for p in small_disk.iterdir() if p.suffix == ".png") == [f"{i:03d}.png" for i in range(30)]


class FlakyDevice(StandInDevice):
    """A device whose batches fail with DeviceFailure (as a lost GPU would) on the calls listed,
    counted over all the run's workers.

    This machine has no GPU, so the fault is injected at the backend boundary: the engine's
    retry and CPU handover are what is under test, and they see exactly what the CuPy
    backend raises when CUDA reports a device error."""

    name = "flaky-device"

    def __init__(self, failing_calls: set[int], calls: SharedCount) -> None:
        super().__init__()
        self.failing_calls, self.calls = failing_calls, calls

    def apply(self, batch, op):
        call = self.calls.add()
        if call in self.failing_calls:
            raise DeviceFailure(f"CUDA error: an illegal memory access was encountered (call {call})")
        return super().apply(batch, op)


def _run_on(make, src: Path, out: Path):
    return run_on(make, gpupipe.Spec.single([ops.Thumbnail(64), ops.Sharpen()]), src, out)


def test_a_device_error_is_retried_and_a_failing_device_hands_the_run_to_the_cpu(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 12)
    reference = _run_on(NumpyBackend, src, tmp_path / "cpu")
    expected = {p.name: p.read_bytes() for p in (tmp_path / "cpu").iterdir()}

    calls = SharedCount()
    once = _run_on(lambda: FlakyDevice({3}, calls), src, tmp_path / "once")      # one bad batch: retried
    assert once.exit_code == 0 and once.summary.processed == 12 and not once.summary.notes
    assert once.summary.backend.startswith("flaky-device") and calls.value > 3
    assert {p.name: p.read_bytes() for p in (tmp_path / "once").iterdir()} == expected

    calls = SharedCount()
    result = _run_on(lambda: FlakyDevice(set(range(5, 10_000)), calls), src, tmp_path / "gone")  # dies for good
    assert result.exit_code == 0 and result.summary.processed == 12 == reference.summary.processed
    assert result.summary.backend.startswith("cpu")
    assert len(result.summary.notes) == 1 and "continues on cpu" in result.summary.notes[0]
    assert "failed 3 times in a row" in result.summary.notes[0] and "illegal memory access" in result.summary.notes[0]
    # Once one worker found the device lost, the other stopped using it too.
    assert calls.value < 5 + 2 * 3 + 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "gone").iterdir()} == expected    # nothing lost or changed


def test_order_decides_which_inputs_go_first(tmp_path: Path) -> None:
    import os
    src = tmp_path / "in"
    src.mkdir()
    sizes = {"a.png": 40, "b.png": 10, "c.png": 30, "d.png": 20}
    for index, (name, side) in enumerate(sizes.items()):
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (side, side, 3), np.uint8)).save(src / name)
        os.utime(src / name, (1_000_000 + index, 1_000_000 + index))        # a is oldest, d newest
    def order(kind: str) -> list[str]:
        result = gpupipe.run(src, tmp_path / kind, [ops.Grayscale()], backend="cpu", workers=1, order=kind)
        started = sorted(result.outcomes, key=lambda o: o.queued_at)      # the order inputs entered the pipeline
        return [Path(o.path).name for o in started]
    assert order("smallest-first") == ["b.png", "d.png", "c.png", "a.png"]
    assert order("largest-first") == ["a.png", "c.png", "d.png", "b.png"]
    assert order("newest-first") == ["d.png", "c.png", "b.png", "a.png"]
    with pytest.raises(UsageError, match="order"):
        gpupipe.run(src, tmp_path / "x", [], order="random")


@pytest.mark.parametrize("codec, flag", [({"decoder": "nvimgcodec"}, "--decoder nvimgcodec"),
                                         ({"gpu_encode": True}, "--gpu-encode")])
@pytest.mark.parametrize("options, message", [({"backend": "cpu"}, "needs the GPU backend"),
                                               ({"engine": "ray"}, "local engine only")])
def test_gpu_codecs_need_the_gpu_backend_and_the_local_engine(tmp_path: Path, codec: dict, flag: str, options: dict,
                                                               message: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (8, 8)).save(src / "a.jpg")
    with pytest.raises(UsageError, match=f"{flag}.*{message}"):
        gpupipe.run(src, tmp_path / "out", [ops.Grayscale()], **codec, **options)
    assert not (tmp_path / "out").exists()                    # refused before any work


class SmallDevice(StandInDevice):
    """A device whose memory holds at most two images, and none over a pixel budget: uploads
    beyond that raise DeviceOutOfMemory, as the CuPy backend does when its pool is full. It
    counts, over all workers, the batches it took and the images it refused alone."""

    name = "small-device"

    def __init__(self, max_pixels: int, largest_batch: SharedCount, refused_alone: SharedCount) -> None:
        super().__init__()
        self.max_pixels, self.largest_batch, self.refused_alone = max_pixels, largest_batch, refused_alone

    def upload(self, images):
        if len(images) > 2 or any(i.shape[0] * i.shape[1] > self.max_pixels for i in images):
            if len(images) == 1:
                self.refused_alone.add()
            raise DeviceOutOfMemory(f"out of GPU memory for {len(images)} image(s)")
        self.largest_batch.raise_to(len(images))
        return super().upload(images)


def test_a_batch_too_big_for_the_device_is_split_and_a_huge_image_done_on_the_cpu(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 9)
    shutil.copy(EXAMPLES / "chapel.png", src / "big.png")
    reference = _run_on(NumpyBackend, src, tmp_path / "cpu")
    # The JPEGs decode DCT-scaled for the thumbnail (225x150); chapel.png (1152x858) does not fit alone.
    largest, refused = SharedCount(), SharedCount()
    result = _run_on(lambda: SmallDevice(200_000, largest, refused), src, tmp_path / "gpu")
    assert result.exit_code == 0 and result.summary.processed == 10 == reference.summary.processed
    assert largest.value == 2 and not result.summary.notes        # split, never handed over
    assert refused.value == 1                                     # chapel.png, then done on the CPU
    assert {p.name: p.read_bytes() for p in (tmp_path / "gpu").iterdir()} == \
        {p.name: p.read_bytes() for p in (tmp_path / "cpu").iterdir()}


def test_a_run_says_where_its_cpu_went(tmp_path: Path) -> None:
    """The summary's CPU seconds by stage: the scan's and the coordination's, about the CPU time
    of the run's process, and the workers', that of its worker processes."""
    import os
    src = tmp_path / "in"
    src.mkdir()
    for copy in range(6):
        for photo in sorted(EXAMPLES.glob("*.jpg")):
            shutil.copy(photo, src / f"{copy}-{photo.name}")
    before = os.times()
    result = gpupipe.run(src, tmp_path / "out", [ops.GaussianBlur(2.0), ops.Thumbnail(256)], backend="cpu",
                         workers=2, journal=False)
    after = os.times()
    cpu = result.summary.cpu_seconds_by_stage
    assert all(seconds >= 0 for seconds in cpu.values())
    assert result.summary.to_dict()["cpu_seconds_by_stage"].keys() == cpu.keys()
    assert set(cpu) == {"scan", "coordinate", "workers"}
    workers_cpu = sum(after[2:4]) - sum(before[2:4])           # the children's, once they ended
    assert cpu["workers"] == pytest.approx(workers_cpu, abs=0.05)
    process_cpu = sum(after[:2]) - sum(before[:2])
    assert cpu["scan"] + cpu["coordinate"] <= 1.05 * process_cpu + 0.05
    assert cpu["workers"] > 5 * (cpu["scan"] + cpu["coordinate"])    # the work is the workers'


def test_the_api_names_its_choices_as_types() -> None:
    """A type checker (and an editor) sees every option's type through ``**options: Unpack[Options]``,
    with the allowed values as Literals, and they are the ones the run checks."""
    import inspect
    import typing

    from gpupipe.backends import BACKEND_CHOICES
    from gpupipe.engine.options import ORDERS
    from gpupipe.options import Options
    assert inspect.signature(gpupipe.run).parameters["options"].annotation == "Unpack[Options]"
    hints = typing.get_type_hints(Options)
    assert typing.get_args(hints["backend"]) == BACKEND_CHOICES
    assert typing.get_args(hints["order"]) == ORDERS
    assert typing.get_args(hints["engine"]) == ("local", "ray")
    assert typing.get_args(hints["on_error"]) == ("continue", "stop")
    for bad in ({"backend": "tpu"}, {"order": "random"}, {"engine": "spark"}, {"on_error": "ignore"}):
        with pytest.raises(UsageError):
            gpupipe.run(EXAMPLES, "/nonexistent-out", [ops.Grayscale()], **bad)


def test_on_error_stop_stops_at_an_input_that_one_variant_failed(tmp_path: Path) -> None:
    """An input whose other variants were made fails at its chunk's end: the run stops there too,
    with the inputs after it cancelled and unwritten (its own made variants stay written)."""
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate("abcdefghij"):
        Image.new("RGB", (8, 8) if name == "c" else (64, 64), (20 * i, 90, 200)).save(src / f"{name}.jpg")
    spec = gpupipe.Spec((gpupipe.Variant((ops.Thumbnail(16),), name="thumb"),
                         gpupipe.Variant((ops.Crop(0, 0, 32, 32),), name="crop")))
    result = gpupipe.run(src, tmp_path / "out", spec, backend="cpu", workers=1, on_error="stop", keep_outcomes=True)
    statuses = {Path(o.path).stem: o.status for o in result.outcomes}
    assert statuses == {"a": "ok", "b": "ok", "c": "failed", **{name: "cancelled" for name in "defghij"}}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == [
        "a_crop.jpg", "a_thumb.jpg", "b_crop.jpg", "b_thumb.jpg", "c_thumb.jpg"]
    assert "c.jpg: variant crop: crop 32×32+0+0 lies outside the 8×8 image" in result.summary.stop_reason
