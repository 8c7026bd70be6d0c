"""Build the benchmark corpora from real photographs (deterministic, idempotent).

Corpora (written under ``benchmarks/corpora/`` by default, which is git-ignored):

``imagenet``
    About 500 ImageNet-size JPEGs: ~500x375 (landscape) or ~375x500 (portrait), the
    long side 488..512 px and the aspect ratio varying a little (short side ~0.68..0.78
    of the long side), quality 88..92, 4:2:0, no metadata.  Each file is a different
    random crop (60..100 % of the largest window of that aspect), offset, optional
    horizontal flip and occasional portrait window of one of the distinct source
    photographs, resized with LANCZOS, so no two files are byte- or pixel-identical.
    With a count other than 500 the directory is ``imagenet<count>``.

``camera``
    One camera-size 12 MP JPEG per distinct source photograph (40 with the shared
    photo set): 4000x3000 for landscape sources, 3000x4000 for portrait ones, a 4:3
    window (small random offset) upscaled with LANCZOS, quality 90, 4:2:0 chroma
    subsampling like a camera, and a small EXIF block (Make/Model/DateTime,
    Orientation=1).  ``grain`` > 0 adds Gaussian "sensor" noise of that sigma (in
    8-bit levels) so the files carry camera-like high-frequency detail and size;
    the default 0 gives smooth upscales, whose files are ~2-4x smaller than real
    12 MP photos (cheaper entropy decode).  With a count other than the number of
    sources the directory is ``camera<count>`` (sources are reused with other windows).

``camera1000`` (only on request)
    1000 camera-size inputs for the memory test.  These are **hard links** to the
    ``camera`` files under 1000 distinct names (``cam_0000.jpg`` ...), i.e. the 40
    distinct files repeated 25 times; the bytes on disk (and in the page cache) are
    those of the 40 files.  Where hard links are impossible (other file system) the
    files are copied instead.  A tool that de-duplicates inputs by content would see
    only 40 distinct images.

Sources: every image below the source directory (``--source``, or GPUPIPE_BENCH_PHOTOS for
every benchmark; default: the repository's tests/photos), except the EXIF-orientation
variants: where ``<name>_1.<ext>`` exists, the siblings ``<name>_0`` and ``<name>_2``
.. ``_8`` (the same photograph stored transformed) are skipped, as SOURCES.md asks.
Sources are EXIF-transposed and converted to RGB before use.

Determinism: every output file depends only on (seed, its index, the source pixels);
the build is checked against a manifest ``<corpus>.manifest.json`` next to the corpus
directory holding the parameters, the builder version and the SHA-256 of every source
file, and is skipped when it matches and all files are present.  Builds go to a
temporary directory that is renamed into place, so an interrupted build never looks
complete.

Usage::

    python benchmarks/make_corpus.py                       # imagenet + camera
    python benchmarks/make_corpus.py --which camera1000    # also builds camera if needed
    python benchmarks/make_corpus.py --imagenet-count 20 --which imagenet   # -> imagenet20

    from benchmarks.make_corpus import ensure_corpus        # or: import make_corpus
    path = ensure_corpus("imagenet", count=20)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

BUILDER_VERSION = 1
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "corpora"
DEFAULT_SEED = 20240601
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}
DEFAULT_IMAGENET_COUNT = 500
DEFAULT_CAMERA1000_COUNT = 1000


def default_source_dir() -> Path:
    """The photos the corpora are made from: GPUPIPE_BENCH_PHOTOS (a folder of real photographs:
    give the same one every time, the corpora's manifests record its files), else the
    repository's own test photos (two photographs and Pillow's eight)."""
    env = os.environ.get("GPUPIPE_BENCH_PHOTOS")
    return Path(env) if env else REPO / "tests" / "photos"


# ---------------------------------------------------------------- sources

_VARIANT = re.compile(r"^(?P<base>.+)_(?P<n>\d)$")


def find_sources(source_dir: Path) -> list[Path]:
    """All distinct source photographs below ``source_dir``, sorted by relative path."""
    source_dir = Path(source_dir)
    files = sorted(
        (p for p in source_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
        key=lambda p: p.relative_to(source_dir).as_posix(),
    )
    names = {(p.parent, p.stem) for p in files}
    out = []
    for p in files:
        m = _VARIANT.match(p.stem)
        if m and m["n"] != "1" and (p.parent, f"{m['base']}_1") in names:
            continue  # an EXIF-orientation variant of <base>_1: same photograph
        out.append(p)
    if not out:
        raise SystemExit(f"no source images found under {source_dir}")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_source(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


# ---------------------------------------------------------------- geometry helpers

def _crop_window(rng: random.Random, sw: int, sh: int, aspect: float, frac_lo: float, frac_hi: float):
    """A random window of the given aspect (w/h) inside sw x sh, covering frac of the largest one."""
    if sw / sh >= aspect:
        mh = sh
        mw = sh * aspect
    else:
        mw = sw
        mh = sw / aspect
    f = rng.uniform(frac_lo, frac_hi)
    cw = max(1.0, mw * f)
    ch = max(1.0, mh * f)
    x0 = rng.uniform(0, sw - cw)
    y0 = rng.uniform(0, sh - ch)
    return (x0, y0, x0 + cw, y0 + ch)


# ---------------------------------------------------------------- builders

def _imagenet_one(i: int, src_img: Image.Image, seed: int, out_path: Path) -> None:
    rng = random.Random(f"{seed}:imagenet:{i}")
    sw, sh = src_img.size
    landscape = sw >= sh
    if rng.random() < 0.2:
        landscape = not landscape  # occasional window of the other orientation
    long_side = rng.randint(488, 512)
    short_side = round(long_side * rng.uniform(0.68, 0.78))
    w, h = (long_side, short_side) if landscape else (short_side, long_side)
    box = _crop_window(rng, sw, sh, w / h, 0.6, 1.0)
    im = src_img.resize((w, h), Image.Resampling.LANCZOS, box=box)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    q = rng.randint(88, 92)
    im.save(out_path, "JPEG", quality=q, subsampling="4:2:0")


def _camera_exif(i: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "gpupipe-bench"          # Make
    exif[0x0110] = "Synthetic 12MP"         # Model
    exif[0x0112] = 1                        # Orientation: normal
    exif[0x0132] = "2024:06:01 12:%02d:%02d" % (i // 60 % 60, i % 60)  # DateTime
    return exif.tobytes()


def _camera_one(i: int, src_img: Image.Image, seed: int, grain: float, out_path: Path,
                first_pass: bool = True) -> None:
    rng = random.Random(f"{seed}:camera:{i}")
    sw, sh = src_img.size
    w, h = (4000, 3000) if sw >= sh else (3000, 4000)
    # first pass over the sources: nearly the whole frame; later passes: other windows
    lo = 0.92 if first_pass else 0.6
    box = _crop_window(rng, sw, sh, w / h, lo, 1.0)
    im = src_img.resize((w, h), Image.Resampling.LANCZOS, box=box)
    if grain > 0:
        import numpy as np

        arr = np.asarray(im, dtype=np.float32)
        nrng = np.random.default_rng([seed, i])
        arr = arr + nrng.standard_normal(arr.shape, dtype=np.float32) * np.float32(grain)
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        del arr
    im.save(out_path, "JPEG", quality=90, subsampling="4:2:0", exif=_camera_exif(i))


def corpus_dir_name(kind: str, count: int | None, n_sources: int) -> str:
    if kind == "imagenet":
        return "imagenet" if count in (None, DEFAULT_IMAGENET_COUNT) else f"imagenet{count}"
    if kind == "camera":
        return "camera" if count in (None, n_sources) else f"camera{count}"
    if kind == "camera1000":
        return "camera1000" if count in (None, DEFAULT_CAMERA1000_COUNT) else f"camera{count}links"
    raise ValueError(f"unknown corpus kind {kind!r} (imagenet, camera, camera1000)")


class OtherPhotos(SystemExit):
    """A corpus exists, built from other source photos than the ones given: stop with this message
    instead of replacing it, as every result measured on it would then compare with the wrong one
    (a run without GPUPIPE_BENCH_PHOTOS would rebuild it from tests/photos)."""


def _recorded_sources(manifest_path: Path) -> list | None:
    """The sources a corpus's manifest records, or None without a readable manifest."""
    try:
        return json.loads(manifest_path.read_text())["params"]["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _manifest_ok(manifest_path: Path, corpus_path: Path, params: dict) -> bool:
    try:
        m = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if m.get("params") != params:
        return False
    files = m.get("files") or []
    return bool(files) and all((corpus_path / f).is_file() for f in files) and \
        len([p for p in corpus_path.iterdir() if p.is_file()]) == len(files)


def _finish(tmp: Path, final: Path, manifest_path: Path, params: dict, t0: float, log) -> Path:
    files = sorted(p.name for p in tmp.iterdir() if p.is_file())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    total = sum((final / f).stat().st_size for f in files)
    manifest = {
        "params": params,
        "files": files,
        "bytes": total,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"built {final} ({len(files)} files, {total / 2**20:.1f} MiB, {manifest['build_seconds']} s)")
    return final


def ensure_corpus(
    kind: str,
    *,
    source_dir: Path | str | None = None,
    out_root: Path | str | None = None,
    count: int | None = None,
    seed: int = DEFAULT_SEED,
    grain: float = 0.0,
    jobs: int = 1,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Build corpus ``kind`` unless an identical build exists; return its directory."""
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    source_dir = Path(source_dir) if source_dir else default_source_dir()
    out_root = Path(out_root) if out_root else DEFAULT_OUT
    out_root.mkdir(parents=True, exist_ok=True)
    sources = find_sources(source_dir)
    src_ids = [[p.relative_to(source_dir).as_posix(), _sha256(p)] for p in sources]
    name = corpus_dir_name(kind, count, len(sources))
    final = out_root / name
    manifest_path = out_root / f"{name}.manifest.json"

    if kind == "camera1000":
        n = count or DEFAULT_CAMERA1000_COUNT
        base = ensure_corpus("camera", source_dir=source_dir, out_root=out_root, seed=seed,
                             grain=grain, jobs=jobs, force=False, quiet=quiet)
        base_files = json.loads((out_root / "camera.manifest.json").read_text())["files"]
        params = {"kind": kind, "count": n, "builder": BUILDER_VERSION,
                  "base": json.loads((out_root / "camera.manifest.json").read_text())["params"]}
        if not force and _manifest_ok(manifest_path, final, params):
            log(f"{final}: up to date ({n} files)")
            return final
        t0 = time.perf_counter()
        tmp = out_root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        linked = 0
        for i in range(n):
            src = base / base_files[i % len(base_files)]
            dst = tmp / f"cam_{i:04d}.jpg"
            try:
                os.link(src, dst)
                linked += 1
            except OSError:
                shutil.copyfile(src, dst)
        log(f"{name}: {linked} hard links, {n - linked} copies")
        return _finish(tmp, final, manifest_path, params, t0, log)

    if kind == "imagenet":
        n = count or DEFAULT_IMAGENET_COUNT
        params = {"kind": kind, "count": n, "seed": seed, "builder": BUILDER_VERSION, "sources": src_ids}
    elif kind == "camera":
        n = count or len(sources)
        params = {"kind": kind, "count": n, "seed": seed, "grain": grain, "builder": BUILDER_VERSION,
                  "sources": src_ids}
    else:
        raise ValueError(f"unknown corpus kind {kind!r}")

    if not force and _manifest_ok(manifest_path, final, params):
        log(f"{final}: up to date ({n} files)")
        return final
    recorded = _recorded_sources(manifest_path)
    if not force and final.exists() and recorded not in (None, src_ids):
        raise OtherPhotos(f"{final} was built from {len(recorded)} other photos, not the {len(src_ids)} "
                          f"in {source_dir}: set GPUPIPE_BENCH_PHOTOS to the folder it was built from (its "
                          f"manifest, {manifest_path.name}, lists them), or rebuild it with make_corpus.py --force "
                          f"(its results then compare only with runs on the new corpus)")

    t0 = time.perf_counter()
    tmp = out_root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    log(f"building {name}: {n} files from {len(sources)} sources in {source_dir} ...")

    cache: dict[int, Image.Image] = {}

    def src(k: int) -> Image.Image:
        if k not in cache:
            cache[k] = load_source(sources[k])
        return cache[k]

    for k in range(min(n, len(sources))):
        src(k)  # load sources up front (single-threaded, deterministic)

    if kind == "imagenet":
        tasks = [(lambda i=i: _imagenet_one(i, src(i % len(sources)), seed, tmp / f"im_{i:04d}.jpg"))
                 for i in range(n)]
    else:
        def cam_name(i: int) -> str:
            return f"cam_{i:03d}_{sources[i % len(sources)].stem}.jpg"

        tasks = [(lambda i=i: _camera_one(i, src(i % len(sources)), seed, grain, tmp / cam_name(i),
                                          i < len(sources)))
                 for i in range(n)]

    if jobs > 1:
        with ThreadPoolExecutor(jobs) as ex:
            for f in [ex.submit(t) for t in tasks]:
                f.result()
    else:
        for t in tasks:
            t()
    return _finish(tmp, final, manifest_path, params, t0, log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=None, help="directory of source photos")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpora root (default benchmarks/corpora)")
    ap.add_argument("--which", default="imagenet,camera", help="comma list: imagenet, camera, camera1000")
    ap.add_argument("--imagenet-count", type=int, default=DEFAULT_IMAGENET_COUNT)
    ap.add_argument("--camera-count", type=int, default=None, help="default: one per source")
    ap.add_argument("--camera1000-count", type=int, default=DEFAULT_CAMERA1000_COUNT)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--grain", type=float, default=0.0, help="camera: Gaussian noise sigma (8-bit levels)")
    ap.add_argument("--jobs", type=int, default=1, help="build threads")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    a = ap.parse_args(argv)
    counts = {"imagenet": a.imagenet_count, "camera": a.camera_count, "camera1000": a.camera1000_count}
    for kind in [w.strip() for w in a.which.split(",") if w.strip()]:
        p = ensure_corpus(kind, source_dir=a.source, out_root=a.out, count=counts.get(kind), seed=a.seed,
                          grain=a.grain, jobs=a.jobs, force=a.force)
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
