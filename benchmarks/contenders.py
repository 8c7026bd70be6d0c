"""The contenders of the benchmark, and the child-process entry point that runs one.

``run.py`` starts ``python benchmarks/contenders.py '<json>'`` once per (contender,
workload, corpus, repeat), so every contender gets a fresh interpreter and its own
peak RSS.  The child imports its library, *then* starts the clock, lists the input
directory, processes every file, stops the clock and writes a JSON result file.  Only
the standard library is imported at module level, so a child pays for (and holds in
memory) only its own contender's library.

Workloads (same parameters for every contender, see README.md):

* W1 thumbs  decode -> thumbnail into a 256x256 box (Lanczos / INTER_AREA, aspect kept,
  never upscale) -> JPEG q85
* W2 web     decode -> fit into 1600x1600 (never upscale) -> sharpen 3x3
  [0,-1,0;-1,5,-1;0,-1,0] -> "(c) gpupipe" text watermark, white, 32 px DejaVu Sans,
  16 px from the bottom-right corner, 50 % opacity -> WebP q80
* W3 filters decode -> gaussian sigma 3 -> unsharp (sigma 1, amount 1, threshold 0)
  -> brightness +10 -> JPEG q90 (4:2:0), full size

Peers run one file per task on a ``concurrent.futures.ThreadPoolExecutor`` of N
threads (Pillow, OpenCV and libvips all release the GIL in decode, resize, filters
and encode); the library's own internal threading is set to 1 thread so that every
contender uses N threads in total (OpenCV: ``cv2.setNumThreads(1)``; libvips:
``VIPS_CONCURRENCY=1``).  ``pyvips-vipsthreads`` is the alternative libvips set-up:
one file at a time, libvips' own thread pool of N threads.  ``--peer-pool process``
(run.py) swaps the thread pool for a ProcessPoolExecutor (workers import the library
themselves, inside the timed region).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from pathlib import Path

# ----------------------------------------------------------------- workload constants

THUMB_BOX = 256
WEB_BOX = 1600
JPEG_Q_THUMB = 85
WEBP_Q = 80
JPEG_Q_FILTERS = 90
SHARPEN_KERNEL = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
WM_TEXT = "\u00a9 gpupipe"
WM_SIZE_PX = 32
WM_MARGIN = 16
WM_OPACITY = 0.5
BLUR_SIGMA = 3.0
USM_SIGMA, USM_AMOUNT, USM_THRESHOLD = 1.0, 1.0, 0
BRIGHTNESS = 10

WORKLOADS = {
    "W1": {"name": "thumbs", "ext": ".jpg", "format": "JPEG"},
    "W2": {"name": "web", "ext": ".webp", "format": "WEBP"},
    "W3": {"name": "filters", "ext": ".jpg", "format": "JPEG"},
}
PEERS = ("pillow", "pyvips", "opencv")
CONTENDERS = ("gpupipe",) + PEERS + ("pyvips-vipsthreads",)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


def font_path() -> str | None:
    for p in FONT_CANDIDATES:
        if os.path.exists(p):
            return p
    return None


def list_inputs(input_dir: str | Path) -> list[Path]:
    d = Path(input_dir)
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def fit_size(w: int, h: int, box_w: int, box_h: int, upscale: bool = False) -> tuple[int, int]:
    """Largest size inside the box with the aspect kept (never larger unless upscale)."""
    s = min(box_w / w, box_h / h)
    if s >= 1 and not upscale:
        return w, h
    return max(1, round(w * s)), max(1, round(h * s))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, as stored (before EXIF orientation)."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        m = data[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            i += 2
            continue
        seglen = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        i += 2 + seglen
    return None


def image_megapixels(path: Path) -> float:
    """Input megapixels from the file header (post-clock bookkeeping only)."""
    with open(path, "rb") as f:
        data = f.read()
    wh = jpeg_size(data)
    if wh is None:
        from PIL import Image  # non-JPEG input: header read via Pillow

        with Image.open(path) as im:
            wh = im.size
    return wh[0] * wh[1] / 1e6


def out_path(src: Path, out_dir: Path, workload: str) -> Path:
    return out_dir / (src.stem + WORKLOADS[workload]["ext"])


# ----------------------------------------------------------------- Pillow

def make_pillow(workload: str, opts: dict):
    from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

    Image.init()  # load all format plugins now (import cost, not processing)
    LANCZOS = Image.Resampling.LANCZOS
    local = threading.local()

    def text_mask():
        # The text rendered once (per thread) as an "L" mask at 50 % (ImageDraw.text ignores
        # the alpha of an RGBA fill on an RGB image, so blending goes through paste(mask)).
        m = getattr(local, "mask", None)
        if m is None:
            fp = font_path()
            f = ImageFont.truetype(fp, WM_SIZE_PX) if fp else ImageFont.load_default(WM_SIZE_PX)
            l, t, r, b = f.getbbox(WM_TEXT)
            m = Image.new("L", (r - l, b - t), 0)
            ImageDraw.Draw(m).text((-l, -t), WM_TEXT, font=f, fill=round(255 * WM_OPACITY))
            local.mask = m
        return m

    sharpen = ImageFilter.Kernel((3, 3), [v for row in SHARPEN_KERNEL for v in row], scale=1, offset=0)
    plus10 = [min(255, v + BRIGHTNESS) for v in range(256)] * 3

    def w1(src: Path, dst: Path):
        with Image.open(src) as im:
            # thumbnail() first so Pillow can use JPEG draft (DCT-scaled) decoding; the
            # box is square, so transposing afterwards gives the same result.
            im.thumbnail((THUMB_BOX, THUMB_BOX), LANCZOS)
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            im.save(dst, "JPEG", quality=JPEG_Q_THUMB)

    def w2(src: Path, dst: Path):
        with Image.open(src) as im:
            im.thumbnail((WEB_BOX, WEB_BOX), LANCZOS)
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode != "RGB":
                im = im.convert("RGB")
            im = im.filter(sharpen)
            m = text_mask()
            x = max(0, im.width - m.width - WM_MARGIN)
            y = max(0, im.height - m.height - WM_MARGIN)
            im.paste((255, 255, 255), (x, y, x + m.width, y + m.height), m)  # white, alpha = mask
            im.save(dst, "WEBP", quality=WEBP_Q)

    def w3(src: Path, dst: Path):
        with Image.open(src) as im:
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode != "RGB":
                im = im.convert("RGB")
            im = im.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))
            im = im.filter(ImageFilter.UnsharpMask(radius=USM_SIGMA, percent=round(USM_AMOUNT * 100),
                                                   threshold=USM_THRESHOLD))
            im = im.point(plus10)
            im.save(dst, "JPEG", quality=JPEG_Q_FILTERS)

    return {"W1": w1, "W2": w2, "W3": w3}[workload]


# ----------------------------------------------------------------- OpenCV

def make_opencv(workload: str, opts: dict):
    import cv2
    import numpy as np

    cv2.setNumThreads(int(opts.get("lib_threads", 1)))
    margin = float(opts.get("opencv_reduce_margin", 2.0))
    reduced = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
    kernel = np.array(SHARPEN_KERNEL, dtype=np.float32)
    local = threading.local()

    def fface():
        f = getattr(local, "fface", None)
        if f is None:
            fp = font_path()
            f = local.fface = cv2.FontFace(fp) if fp else cv2.FontFace("sans")
        return f

    def read(src: Path) -> bytes:
        with open(src, "rb") as fh:
            return fh.read()

    def write(dst: Path, ext: str, img, params):
        ok, enc = cv2.imencode(ext, img, params)
        if not ok:
            raise RuntimeError(f"imencode {ext} failed")
        enc.tofile(str(dst))

    def w1(src: Path, dst: Path):
        data = read(src)
        buf = np.frombuffer(data, np.uint8)
        wh = jpeg_size(data)
        flag = cv2.IMREAD_COLOR
        if wh:
            tw, th = fit_size(wh[0], wh[1], THUMB_BOX, THUMB_BOX)
            # DCT-domain reduction only while the reduced image keeps >= margin x target
            for kk, fl in reduced:
                if wh[0] // kk >= tw * margin and wh[1] // kk >= th * margin:
                    flag = fl
                    break
        img = cv2.imdecode(buf, flag)  # applies EXIF orientation (no IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise RuntimeError("imdecode failed")
        h, w = img.shape[:2]
        if wh:  # target from the full-size dims, swapped if EXIF orientation rotated the image
            W, H = wh if (w >= h) == (wh[0] >= wh[1]) else (wh[1], wh[0])
        else:
            W, H = w, h
        tw, th = fit_size(W, H, THUMB_BOX, THUMB_BOX)
        if (tw, th) != (w, h):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA if tw < w else cv2.INTER_LANCZOS4)
        write(dst, ".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_Q_THUMB])

    def w2(src: Path, dst: Path):
        img = cv2.imdecode(np.frombuffer(read(src), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError("imdecode failed")
        h, w = img.shape[:2]
        tw, th = fit_size(w, h, WEB_BOX, WEB_BOX)
        if (tw, th) != (w, h):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        img = cv2.filter2D(img, -1, kernel)
        f = fface()
        h, w = img.shape[:2]
        bx, by, bw, bh = cv2.getTextSize((w, h), WM_TEXT, (0, 0), f, WM_SIZE_PX)  # box rel. to baseline org
        x0 = max(0, w - bw - WM_MARGIN)
        y0 = max(0, h - bh - WM_MARGIN)
        roi = img[y0:y0 + bh, x0:x0 + bw]
        txt = roi.copy()
        cv2.putText(txt, WM_TEXT, (-bx, -by), (255, 255, 255), f, WM_SIZE_PX)
        cv2.addWeighted(roi, 1 - WM_OPACITY, txt, WM_OPACITY, 0, dst=roi)
        write(dst, ".webp", img, [cv2.IMWRITE_WEBP_QUALITY, WEBP_Q])

    def w3(src: Path, dst: Path):
        img = cv2.imdecode(np.frombuffer(read(src), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise RuntimeError("imdecode failed")
        img = cv2.GaussianBlur(img, (0, 0), BLUR_SIGMA)
        blur1 = cv2.GaussianBlur(img, (0, 0), USM_SIGMA)
        img = cv2.addWeighted(img, 1 + USM_AMOUNT, blur1, -USM_AMOUNT, 0)  # saturating
        img = cv2.add(img, (BRIGHTNESS, BRIGHTNESS, BRIGHTNESS, 0))     # saturating
        write(dst, ".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_Q_FILTERS])

    return {"W1": w1, "W2": w2, "W3": w3}[workload]


# ----------------------------------------------------------------- pyvips

def make_pyvips(workload: str, opts: dict):
    # VIPS_CONCURRENCY is read when libvips initialises, so it is set before the import.
    os.environ["VIPS_CONCURRENCY"] = str(int(opts.get("lib_threads", 1)))
    import pyvips

    pyvips.cache_set_max(0)  # batch of distinct files: the operation cache only holds memory
    try:
        keep_none = {"keep": pyvips.enums.ForeignKeep.NONE}  # libvips >= 8.15
    except AttributeError:
        keep_none = {"strip": True}
    mask = pyvips.Image.new_from_array(SHARPEN_KERNEL, scale=1)
    lock = threading.Lock()
    cache: dict = {}

    def overlay():
        ov = cache.get("ov")
        if ov is None:
            with lock:
                ov = cache.get("ov")
                if ov is None:
                    fp = font_path()
                    kw = {"fontfile": fp, "font": f"DejaVu Sans {WM_SIZE_PX}"} if fp else \
                        {"font": f"sans {WM_SIZE_PX}"}
                    t = pyvips.Image.text(WM_TEXT, dpi=72, **kw)  # 1-band 0..255 mask
                    alpha = (t * WM_OPACITY).cast("uchar")
                    ov = t.new_from_image([255, 255, 255]).bandjoin(alpha).copy(interpretation="srgb")
                    ov = ov.copy_memory()
                    cache["ov"] = ov
        return ov

    def w1(src: Path, dst: Path):
        # thumbnail(): shrink-on-load + lanczos3 + EXIF autorotate
        im = pyvips.Image.thumbnail(str(src), THUMB_BOX, height=THUMB_BOX, size="down")
        im.jpegsave(str(dst), Q=JPEG_Q_THUMB, **keep_none)

    def w2(src: Path, dst: Path):
        im = pyvips.Image.thumbnail(str(src), WEB_BOX, height=WEB_BOX, size="down")
        if im.hasalpha():
            im = im.flatten(background=[255, 255, 255])
        im = im.conv(mask, precision="integer").cast("uchar")
        ov = overlay()
        x = max(0, im.width - ov.width - WM_MARGIN)
        y = max(0, im.height - ov.height - WM_MARGIN)
        im = im.composite2(ov, "over", x=x, y=y).extract_band(0, n=3).cast("uchar")
        im.webpsave(str(dst), Q=WEBP_Q, **keep_none)

    def w3(src: Path, dst: Path):
        im = pyvips.Image.new_from_file(str(src), access="sequential")
        if im.get_typeof("orientation") and im.get("orientation") not in (0, 1):
            # rotation needs random access; reopen (rare in practice for this corpus)
            im = pyvips.Image.new_from_file(str(src)).autorot()
        b = im.gaussblur(BLUR_SIGMA)                       # library defaults: min_ampl 0.2, integer
        u = b + (b - b.gaussblur(USM_SIGMA)) * USM_AMOUNT  # unsharp mask, threshold 0
        out = (u + BRIGHTNESS).cast("uchar")               # cast clamps to 0..255
        out.jpegsave(str(dst), Q=JPEG_Q_FILTERS, subsample_mode="on", **keep_none)

    return {"W1": w1, "W2": w2, "W3": w3}[workload]


MAKERS = {"pillow": make_pillow, "opencv": make_opencv, "pyvips": make_pyvips}


# ----------------------------------------------------------------- gpupipe

def gpupipe_spec(workload: str):
    """The gpupipe Spec of a workload (kept small and separate: the API is young)."""
    import gpupipe
    from gpupipe import ops

    if workload == "W1":
        return gpupipe.Spec.single([ops.Thumbnail(THUMB_BOX)], format="jpeg", quality=JPEG_Q_THUMB)
    if workload == "W2":
        # upscale=False: the peers never enlarge in W2 either (the design's resize default is
        # upscale=true, which would make 500x375 inputs 1600x1200 and do ~10x the work).
        # If this Resize has no `upscale` keyword, fall back to the plain call; run.py's
        # output-size check then reports any enlarged outputs.
        try:
            resize = ops.Resize(WEB_BOX, WEB_BOX, mode="fit", upscale=False)
        except TypeError:
            resize = ops.Resize(WEB_BOX, WEB_BOX, mode="fit")
        # size/margin pinned to what the peers draw (32 px text, 16 px margin)
        try:
            mark = ops.Watermark(text=WM_TEXT, position="bottom-right", opacity=WM_OPACITY,
                                 size=WM_SIZE_PX, margin=WM_MARGIN)
        except TypeError:
            mark = ops.Watermark(text=WM_TEXT, position="bottom-right", opacity=WM_OPACITY)
        return gpupipe.Spec.single([resize, ops.Sharpen(), mark], format="webp", quality=WEBP_Q)
    if workload == "W3":
        return gpupipe.Spec.single(
            [ops.GaussianBlur(BLUR_SIGMA), ops.Unsharp(sigma=USM_SIGMA, amount=USM_AMOUNT, threshold=USM_THRESHOLD),
             ops.Brightness(BRIGHTNESS)], format="jpeg", quality=JPEG_Q_FILTERS)
    raise ValueError(workload)


def run_gpupipe(workload: str, input_dir: Path, output_dir: Path, workers: int,
                max_memory: int | None = None, spec=None, backend: str = "cpu", extra: dict | None = None):
    """One gpupipe run; returns (processed, failed, result).  ``extra``: more run() keywords."""
    import gpupipe

    spec = spec if spec is not None else gpupipe_spec(workload)
    # As the CLI runs: no list of every input's outcome kept (the summary is all that is read here).
    kw = {"workers": workers, "backend": backend, "progress": False, "keep_outcomes": False}
    if max_memory:
        kw["max_memory"] = max_memory
    kw.update(extra or {})
    result = gpupipe.run([str(input_dir)], str(output_dir), spec, **kw)
    return int(result.summary.processed), int(result.summary.failed), result


def gpupipe_report(result) -> dict:
    """Whatever the run summary offers beyond processed/failed (defensive: the API is young)."""
    out: dict = {}
    s = getattr(result, "summary", None)
    try:
        d = s.to_dict()
        out["summary"] = {k: d[k] for k in ("backend", "processed", "failed", "skipped", "discovered",
                                             "outputs_written", "megapixels_in", "wall_seconds",
                                             "failures_by_class", "failure_examples", "stop_reason")
                          if k in d}
    except Exception:  # noqa: BLE001
        pass
    ex = getattr(s, "failure_examples", None)
    if ex:
        out["errors"] = [m for msgs in dict(ex).values() for m in msgs][:5]
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string (ASCII, \uXXXX escapes) is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def spec_toml(spec) -> str:
    """A gpupipe Spec as a --spec TOML file (None values left out: they are the defaults)."""
    lines = []
    for variant in spec.to_dict()["variants"]:
        lines.append("[[variant]]")
        for key, value in variant.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def gpupipe_spec_file(workload: str, folder: Path) -> Path:
    """``gpupipe_spec(workload)`` as a ``gpupipe run --spec`` file in ``folder``, checked to read back
    as the same spec."""
    import gpupipe

    spec = gpupipe_spec(workload)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"spec-{workload}.toml"
    path.write_text(spec_toml(spec), encoding="utf-8")
    if gpupipe.Spec.from_toml(path).hash() != spec.hash():
        raise SystemExit(f"internal error: {path} does not reproduce the {workload} spec")
    return path


def preimport_gpupipe() -> list[str]:
    """Import gpupipe's CPU-side modules (and hence its codecs' libraries) before the clock,
    as the peers' imports are; GPU/cluster/CLI modules are left alone."""
    import importlib
    import pkgutil

    import gpupipe

    done = []
    for m in pkgutil.walk_packages(gpupipe.__path__, "gpupipe."):
        if any(x in m.name for x in ("cupy", "cuda", "dali", "ray", "cli", "__main__", "nvimg")):
            continue
        try:
            importlib.import_module(m.name)
            done.append(m.name)
        except Exception:  # noqa: BLE001 - optional parts may not import here
            pass
    try:
        from PIL import Image

        Image.init()
    except Exception:  # noqa: BLE001
        pass
    return done


def probe_gpupipe() -> str | None:
    """None when the gpupipe API this harness codes against is importable, else the error."""
    try:
        import gpupipe
        from gpupipe import ops  # noqa: F401

        for w in WORKLOADS:
            gpupipe_spec(w)
        if not callable(getattr(gpupipe, "run", None)):
            return "gpupipe.run is missing"
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        return f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------- pools

_PROC_FN = None


def _proc_init(contender: str, workload: str, opts: dict):
    global _PROC_FN
    _PROC_FN = MAKERS[contender](workload, opts)


def _proc_task(src: str, dst: str):
    _PROC_FN(Path(src), Path(dst))


def run_pool(contender: str, workload: str, files: list[Path], out_dir: Path, workers: int,
             pool: str, opts: dict, fn=None):
    """Process every file; returns (ok_files, errors)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    ok: list[Path] = []
    errors: list[str] = []
    if pool == "sequential":
        for f in files:
            try:
                fn(f, out_path(f, out_dir, workload))
                ok.append(f)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{f.name}: {type(e).__name__}: {e}")
        return ok, errors
    if pool == "process":
        import multiprocessing as mp

        ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_proc_init,
                                 initargs=(contender, workload, opts))
        futs = {ex.submit(_proc_task, str(f), str(out_path(f, out_dir, workload))): f for f in files}
    else:
        ex = ThreadPoolExecutor(workers)
        futs = {ex.submit(fn, f, out_path(f, out_dir, workload)): f for f in files}
    with ex:
        for fut, f in futs.items():
            try:
                fut.result()
                ok.append(f)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{f.name}: {type(e).__name__}: {e}")
    return ok, errors


# ----------------------------------------------------------------- child entry

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def child_main(cfg: dict) -> dict:
    contender = cfg["contender"]
    workload = cfg["workload"]
    input_dir = Path(cfg["input_dir"])
    out_dir = Path(cfg["output_dir"])
    workers = int(cfg["workers"])
    opts = dict(cfg.get("opts") or {})
    res = {"contender": contender, "workload": workload, "workers": workers}

    if cfg.get("probe"):
        res["error"] = probe_gpupipe() if contender == "gpupipe" else None
        return res

    # ---- imports and setup that are not processing (outside the clock)
    fn = None
    pool = cfg.get("pool", "thread")
    if contender == "gpupipe":
        preimport_gpupipe()
        spec = gpupipe_spec(workload)
    elif contender == "pyvips-vipsthreads":
        opts["lib_threads"] = workers
        fn = make_pyvips(workload, opts)
        pool = "sequential"
    else:
        opts.setdefault("lib_threads", 1)
        if pool == "process":
            if contender == "pyvips":
                os.environ["VIPS_CONCURRENCY"] = "1"
        else:
            fn = MAKERS[contender](workload, opts)
    res["pool"] = "gpupipe" if contender == "gpupipe" else pool
    res["rss_start_mb"] = round(_rss_mb(), 1)

    # ---- the timed region: listing + processing + writing every output
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    if contender == "gpupipe":
        processed, failed, result = run_gpupipe(workload, input_dir, out_dir, workers,
                                                max_memory=cfg.get("max_memory"), spec=spec,
                                                extra=cfg.get("gpupipe_kw"))
        t1 = time.perf_counter()
        rep = gpupipe_report(result)
        del result
        errors = rep.get("errors", [])
        res["gpupipe"] = rep.get("summary")
        ok_files = None
    else:
        files = list_inputs(input_dir)
        ok_files, errors = run_pool(contender, workload, files, out_dir, workers, pool, opts, fn)
        t1 = time.perf_counter()
        processed, failed = len(ok_files), len(errors)
    cpu1 = _cpu_s()
    # ---- bookkeeping after the clock
    res.update(wall_s=t1 - t0, cpu_s=cpu1 - cpu0, processed=processed, failed=failed,
               errors=errors[:5], rss_end_mb=round(_rss_mb(), 1))
    if cfg.get("whole_process"):       # timed from outside, to its exit: nothing more to do here
        return res
    all_files = list_inputs(input_dir)
    if ok_files is None:
        total_mp = sum(image_megapixels(p) for p in all_files)
        # header-based like the peers (gpupipe's own pixels_in counts decoded, maybe
        # DCT-reduced, sizes; it is kept in res["gpupipe"] for reference only)
        if processed == len(all_files) and failed == 0:
            res["megapixels"] = total_mp
        else:  # gpupipe does not tell which files: pro-rata estimate
            res["megapixels"] = total_mp * processed / max(1, len(all_files))
            res["megapixels_estimated"] = True
    else:
        res["megapixels"] = sum(image_megapixels(p) for p in ok_files)
    return res


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    try:
        res = child_main(cfg)
    except Exception as e:  # noqa: BLE001
        res = {"contender": cfg.get("contender"), "workload": cfg.get("workload"),
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    res["vm_hwm_mb"] = _vm_hwm_mb()  # this process's own kernel high-water mark (reset at exec)
    Path(cfg["result_file"]).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
