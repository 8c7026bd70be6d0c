"""The host side of the CUDA backend: which kernels to launch for one op on one batch.

A batch on the device is one packed buffer holding HWC images of one depth back to back
(``kernels/gpupipe.cuh``): uint8, or uint16 (whose kernels are the ``_u16`` twins, and which
the byte-moving geometry kernels see as bytes). For an op and the batch's image shapes, ``plan_op``
returns a ``Program``: the launches in order — kernel name and arguments, where an
argument is a named device buffer (``Buf``), a host array to upload (descriptors,
resample tables, filter taps, watermark marks) or a typed scalar — plus the scratch
buffers they need and the result's shapes.

Nothing here imports CUDA. Two executors run programs: the CuPy backend on a GPU,
and ``tests/support/kernelcheck.py`` on the CPU through the same kernel sources compiled
with a shim under AddressSanitizer — so every line of this planning is checked
against the NumPy backend on machines without a GPU.
"""

from __future__ import annotations

import functools
from dataclasses import field

import numpy as np

from ... import ops, pixels
from ...records import dataclass
from ..numpy import color, composite, filters, geometry, intensity, resample

Shape = tuple[int, int, int]            # (height, width, channels)

DESC = np.dtype([("in_offset", np.int64), ("out_offset", np.int64), ("aux_offset", np.int64),
                 ("width", np.int32), ("height", np.int32), ("channels", np.int32),
                 ("out_width", np.int32), ("out_height", np.int32), ("out_channels", np.int32),
                 ("x", np.int32), ("y", np.int32), ("param", np.int32, (4,))], align=True)
assert DESC.itemsize == 72, "ImageDesc layout is shared with kernels/gpupipe.cuh"

# resample.cu's pass kinds and flags
HORIZONTAL, VERTICAL, COPY = 0, 1, 2
PREMULTIPLY, UNPREMULTIPLY = 1, 2


@dataclass(frozen=True)
class Buf:
    """A device buffer of the program, by name: "src" is the batch itself."""

    name: str


# Launch.kernel of a device-to-device copy of a whole buffer, args (source Buf, target Buf): the
# backend's memcpy (the copy engine), the CPU check's np.copyto.
MEMCPY = "memcpy"


@dataclass
class Launch:
    """One kernel launch of a plan: the kernel, its arguments and the threads one image needs."""

    kernel: str          # a kernels/*.cu kernel, or MEMCPY
    args: tuple
    work: int            # the most threads one image needs (output pixels): sizes the grid


@dataclass
class Program:
    """An op chain as launches over a batch: its output shapes, scratch buffers and result buffer."""

    out_shapes: list[Shape]
    dtype: np.dtype = np.dtype(np.uint8)       # the batch's depth (window may change it: see the result buffer)
    launches: list[Launch] = field(default_factory=list)
    buffers: dict[str, tuple[int, np.dtype]] = field(default_factory=dict)   # scratch: name -> (elements, dtype)
    zeroed: set[str] = field(default_factory=set)      # scratch buffers that must start as zeros (flags)
    result: str = "src"                 # the buffer holding the output when the launches are done


def offsets(shapes: list[Shape]) -> np.ndarray:
    """Element offset of each image in a packed buffer, and the total at the end."""
    return np.concatenate([[0], np.cumsum([h * w * c for h, w, c in shapes])]).astype(np.int64)


def descriptors(in_shapes: list[Shape], out_shapes: list[Shape]) -> np.ndarray:
    descs = np.zeros(len(in_shapes), DESC)
    descs["in_offset"] = offsets(in_shapes)[:-1]
    descs["out_offset"] = offsets(out_shapes)[:-1]
    descs["height"], descs["width"], descs["channels"] = np.array(in_shapes, np.int32).T.reshape(3, -1)
    descs["out_height"], descs["out_width"], descs["out_channels"] = np.array(out_shapes, np.int32).T.reshape(3, -1)
    return descs


class _Builder:
    """Chains launches: each step reads the current buffer and writes a new one."""

    def __init__(self, shapes: list[Shape], dtype=np.uint8) -> None:
        self.shapes = list(shapes)
        self.dtype = np.dtype(dtype)
        if self.dtype not in pixels.DTYPES:
            raise ValueError(f"a batch of {self.dtype} images: the pixel contract holds uint8 and uint16 only")
        self.program = Program(out_shapes=list(shapes), dtype=self.dtype)
        self.current = "src"

    def kernel(self, name: str) -> str:
        """The kernel of this depth: ``name`` for uint8 batches, its ``_u16`` twin for uint16 ones."""
        return name if self.dtype == np.uint8 else f"{name}_u16"

    def scratch(self, elements: int, dtype=np.uint8, zeroed: bool = False) -> Buf:
        name = f"t{len(self.program.buffers)}"
        self.program.buffers[name] = (max(1, int(elements)), np.dtype(dtype))
        if zeroed:
            self.program.zeroed.add(name)
        return Buf(name)

    def step(self, kernel: str, out_shapes: list[Shape], *params, descs: np.ndarray | None = None,
             work: int | None = None, moves_bytes: bool = False, out_dtype=None) -> np.ndarray:
        """kernel(current, new, descs, n, *params) into a new buffer; returns the descriptors used
        (callers fill x, y, param, aux_offset before the program runs: they are uploaded then).
        ``work`` sizes the grid: the most thread items one image needs (default: output pixels).
        ``moves_bytes``: a geometry kernel, the same at both depths, which is told a pixel's bytes
        as its channels (and offsets in bytes); otherwise the depth's twin of ``kernel`` runs,
        unless ``out_dtype`` names a new depth (then ``kernel`` is taken as named)."""
        if moves_bytes:
            size = self.dtype.itemsize
            descs = descriptors([(h, w, c * size) for h, w, c in self.shapes],
                                [(h, w, c * size) for h, w, c in out_shapes])
        else:
            kernel = kernel if out_dtype is not None else self.kernel(kernel)
            if descs is None:
                descs = descriptors(self.shapes, out_shapes)
        self.dtype = self.dtype if out_dtype is None else np.dtype(out_dtype)
        out = self.scratch(offsets(out_shapes)[-1], self.dtype)
        self.program.launches.append(Launch(kernel, (Buf(self.current), out, descs, np.int32(len(out_shapes)),
                                                     *params), work or _most_pixels(out_shapes)))
        self.current, self.shapes = out.name, list(out_shapes)
        return descs

    def copy(self) -> Buf:
        """A new buffer holding the current one's bytes (a MEMCPY launch); it becomes current and the
        buffer it copies is returned, for a kernel that reads there and writes over the copy."""
        source = Buf(self.current)
        out = self.scratch(offsets(self.shapes)[-1], self.dtype)
        self.program.launches.append(Launch(MEMCPY, (source, out), 0))
        self.current = out.name
        return source

    def done(self) -> Program:
        self.program.out_shapes, self.program.result = self.shapes, self.current
        return self.program


def _most_pixels(shapes: list[Shape]) -> int:
    return max((h * w for h, w, _ in shapes), default=1)


def _most_items(shapes: list[Shape], across: int = 1, down: int = 1) -> int:
    """The most thread items one image needs when an item covers ``across`` x ``down`` pixels
    (partial items at the right and bottom edges count whole)."""
    return max((-(-w // across) * -(-h // down) for h, w, _ in shapes), default=1)


def plan_op(op: ops.Op, shapes: list[Shape], dtype=np.uint8) -> Program:
    """The program for one op over images of ``shapes`` and depth ``dtype`` (checked by
    Op.output_size beforehand)."""
    builder = _Builder(shapes, dtype)
    planner = _PLANNERS.get(type(op))
    if planner is None:
        raise NotImplementedError(f"no CUDA plan for op {op.name}")
    planner(builder, op)
    return builder.done()


# ---------------------------------------------------------------------- pointwise and geometry

def _grayscale(b: _Builder, op: ops.Grayscale) -> None:
    # gp_grayscale's thread items are 16 pixels each on RGB images, 8 on RGBA ones (gp_grayscale_u16: 1)
    same_mode = len({c for _, _, c in b.shapes}) == 1 and b.dtype == np.uint8
    per_item = {3: 16, 4: 8}.get(b.shapes[0][2], 1) if same_mode else 1
    b.step("gp_grayscale", [(h, w, 1 if c in (1, 3) else 2) for h, w, c in b.shapes],
           work=_most_pixels(b.shapes) // per_item + 1)


def colour_table(op: ops.Op, dtype=np.uint8) -> np.ndarray | None:
    """The table (every value of the depth) of an op that maps each colour value on its own
    (brightness, contrast), evaluated exactly as the NumPy backend evaluates it; None for other ops."""
    if isinstance(op, ops.Brightness):
        return color.brightness_table(op.value, dtype)
    if isinstance(op, ops.Contrast):
        return color.contrast_table(op.factor, dtype)
    return None


def compose_tables(first: np.ndarray | None, then: np.ndarray) -> np.ndarray:
    """One table for ``first`` followed by ``then``: exact, both being functions of one value."""
    return then if first is None else then[first]


def plan_table(table: np.ndarray, shapes: list[Shape]) -> Program:
    """One gp_lut launch: colour channels through ``table`` (a fused run of pointwise ops), at the
    table's depth (256 uint8 entries, or 65536 uint16 ones)."""
    builder = _Builder(shapes, table.dtype)
    _lut(builder, table)
    return builder.done()


def _colour_table_op(b: _Builder, op: ops.Op) -> None:
    _lut(b, colour_table(op, b.dtype))


def _lut(b: _Builder, table: np.ndarray) -> None:
    values = max(h * w * c for h, w, c in b.shapes)
    # gp_lut's thread items are 16 bytes each, not a pixel (gp_lut_u16: a value each)
    b.step("gp_lut", b.shapes, np.ascontiguousarray(table, b.dtype),
           work=values // 16 + 1 if b.dtype == np.uint8 else values)


# ---------------------------------------------------------------------- intensity

_DEPTH_NAMES = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16"}


def _window(b: _Builder, op: ops.Window) -> None:
    """One table over the input depth's values, of the result's depth (gp_lut or a gp_lut_* twin)."""
    table = intensity.window_table(op.center, op.width, b.dtype, op.bits)
    if table.dtype == b.dtype:
        _lut(b, table)
        return
    kernel = f"gp_lut_{_DEPTH_NAMES[b.dtype]}_{_DEPTH_NAMES[table.dtype]}"
    b.step(kernel, b.shapes, table, work=max(h * w * c for h, w, c in b.shapes), out_dtype=table.dtype)


def _stretch(b: _Builder, mode: int, low: float = 0.0, high: float = 0.0) -> None:
    """The histogram ops (kernels/intensity.cu): count, accumulate (and find percentiles), map."""
    n, bins = len(b.shapes), pixels.maximum(b.dtype) + 1
    values = max(h * w * c for h, w, c in b.shapes)
    hist = b.scratch(n * bins, np.int32, zeroed=True)
    stats = b.scratch(2 * n, np.float64)
    b.program.launches.append(Launch(b.kernel("gp_histogram"), (Buf(b.current), hist, descriptors(b.shapes, b.shapes),
                                                                np.int32(n), np.int32(bins)), values))
    b.program.launches.append(Launch("gp_histogram_stats", (hist, stats, np.int32(n), np.int32(bins), np.int32(mode),
                                                            np.float64(low), np.float64(high)), 1))
    b.step("gp_stretch", b.shapes, hist, stats, np.int32(mode), np.int32(bins), work=values)


def _normalize(b: _Builder, op: ops.Normalize) -> None:
    _stretch(b, 0, op.low, op.high)


def _equalize(b: _Builder, op: ops.Equalize) -> None:
    if op.clahe:
        _clahe(b, op)
    else:
        _stretch(b, 1)


def _clahe(b: _Builder, op: ops.Equalize) -> None:
    """CLAHE (kernels/intensity.cu): tile histograms, a thread per tile for its map, then the blend."""
    n, per_image = len(b.shapes), op.tiles * op.tiles * intensity.CLAHE_BINS
    descs = descriptors(b.shapes, b.shapes)
    hist = b.scratch(n * per_image, np.int32, zeroed=True)
    maps = b.scratch(n * per_image, np.float64)
    b.program.launches.append(Launch(b.kernel("gp_tile_histograms"), (Buf(b.current), hist, descs, np.int32(n),
                                                                      np.int32(op.tiles)), _most_pixels(b.shapes)))
    b.program.launches.append(Launch("gp_tile_maps", (hist, maps, descs, np.int32(n), np.int32(op.tiles),
                                                      np.float64(op.clip_limit),
                                                      np.float64(pixels.maximum(b.dtype))), op.tiles * op.tiles))
    b.step("gp_clahe", b.shapes, maps, np.int32(op.tiles))


TILE = 32                # GP_TILE of kernels/transpose.cu


def _rotate(b: _Builder, op: ops.Rotate) -> None:
    if op.degrees == 180:                  # a reversal: both sides are contiguous already
        b.step("gp_rotate", b.shapes, np.int32(180), moves_bytes=True)
        return
    # A transpose: 32 x 32 tiles through shared memory, one tile a block (its 1024 pixels are
    # one block's work at GP_PIXELS_PER_THREAD 4 and 256 threads).
    out = [(w, h, c) for h, w, c in b.shapes]
    b.step("gp_rotate_tiled", out, np.int32(op.degrees), work=_most_items(out, TILE, TILE) * TILE * TILE,
           moves_bytes=True)


def _flip(b: _Builder, op: ops.Flip) -> None:
    b.step("gp_flip", b.shapes, np.int32(op.direction == "vertical"), moves_bytes=True)


def _crop_to(b: _Builder, boxes: list[tuple[int, int, int, int]]) -> None:
    """Crop image k to boxes[k] = (x, y, w, h)."""
    descs = b.step("gp_crop", [(ch, cw, c) for (_, _, c), (_, _, cw, ch) in zip(b.shapes, boxes)], moves_bytes=True)
    descs["x"], descs["y"] = np.array([box[:2] for box in boxes], np.int32).T.reshape(2, -1)


def _crop(b: _Builder, op: ops.Crop) -> None:
    _crop_to(b, [(op.x, op.y, op.width, op.height)] * len(b.shapes))


def _center_crop(b: _Builder, op: ops.CenterCrop) -> None:
    _crop_to(b, [((w - op.width) // 2, (h - op.height) // 2, op.width, op.height) for h, w, _ in b.shapes])


def _pad_to(b: _Builder, places: list[tuple[int, int, int, int]], background) -> None:
    """Place image k at (left, top) on a canvas of places[k] = (canvas w, canvas h, left, top)."""
    size = b.dtype.itemsize
    fill = np.zeros(64, np.uint8)               # per pixel size n bytes: fill[(n-1)*8 : (n-1)*8 + n]
    for c in (1, 2, 3, 4):
        n = c * size
        fill[(n - 1) * 8:(n - 1) * 8 + n] = geometry.fill_value(background, c, b.dtype).view(np.uint8)
    descs = b.step("gp_pad", [(ch, cw, c) for (_, _, c), (cw, ch, _, _) in zip(b.shapes, places)], fill,
                   moves_bytes=True)
    descs["x"], descs["y"] = np.array([p[2:] for p in places], np.int32).T.reshape(2, -1)


# ---------------------------------------------------------------------- resize

def _resize(b: _Builder, op: ops.Resize) -> None:
    plans = [op.plan(w, h) for h, w, _ in b.shapes]
    if any((p.width, p.height) != (w, h) for p, (h, w, _) in zip(plans, b.shapes)):
        _resample(b, [(p.width, p.height) for p in plans], op.filter)
    if any(p.crop for p in plans):                       # images without a crop take their whole self
        _crop_to(b, [p.crop or (0, 0, w, h) for p, (h, w, _) in zip(plans, b.shapes)])
    if any(p.pad for p in plans):
        _pad_to(b, [p.pad or (w, h, 0, 0) for p, (h, w, _) in zip(plans, b.shapes)], op.background)


@functools.lru_cache(maxsize=1024)
def resample_passes(shape: Shape, width: int, height: int, filter: str) -> tuple[tuple, tuple]:
    """The two passes of one image: (kind, in (w, h), out (w, h), table or None, shift, flags).

    Pillow 13's order (``resample.vertical_first``), resampling only the rows or columns
    the second pass reads; an image needing one pass or none copies in the other."""
    in_h, in_w, channels = shape
    def copy(w, h):
        return (COPY, (w, h), (w, h), None, 0, 0)
    if (in_w, in_h) == (width, height):
        return copy(in_w, in_h), copy(in_w, in_h)
    passes = []
    if resample.vertical_first(in_w, in_h, width, height):
        h_start, h_len, h_coeffs = resample.resample_coefficients(in_w, width, filter)
        v_start, v_len, v_coeffs = resample.resample_coefficients(in_h, height, filter)
        first, last = int(h_start[0]), int(h_start[-1]) + int(h_len[-1])
        passes.append((VERTICAL, (in_w, in_h), (last - first, height), (v_start, v_len, v_coeffs), first, 0))
        passes.append((HORIZONTAL, (last - first, height), (width, height), (h_start - first, h_len, h_coeffs), 0, 0))
    else:
        v_start, v_len, v_coeffs = resample.resample_coefficients(in_h, height, filter)
        cur_w, cur_h = in_w, in_h
        if width != in_w:
            h_start, h_len, h_coeffs = resample.resample_coefficients(in_w, width, filter)
            first, last = int(v_start[0]), int(v_start[-1]) + int(v_len[-1])
            passes.append((HORIZONTAL, (in_w, in_h), (width, last - first), (h_start, h_len, h_coeffs), first, 0))
            v_start = v_start - first
            cur_w, cur_h = width, last - first
        if height != in_h:
            passes.append((VERTICAL, (cur_w, cur_h), (width, height), (v_start, v_len, v_coeffs), 0, 0))
    if len(passes) == 1:
        passes.append(copy(width, height))
    if channels in (2, 4) and filter != "nearest":
        # Pillow premultiplies when the first pass reads and unpremultiplies when the last real pass stores.
        kind, i, o, t, s, f = passes[0]
        passes[0] = (kind, i, o, t, s, f | PREMULTIPLY)
        last = 1 if passes[1][0] != COPY else 0
        kind, i, o, t, s, f = passes[last]
        passes[last] = (kind, i, o, t, s, f | UNPREMULTIPLY)
    return tuple(passes)


def _resample(b: _Builder, sizes: list[tuple[int, int]], filter: str) -> None:
    plans = [resample_passes(shape, w, h, filter) for shape, (w, h) in zip(b.shapes, sizes)]
    for step in (0, 1):
        tables, used = [], 0
        in_shapes, out_shapes = [], []
        params, aux = [], []
        placed: dict[int, int] = {}             # images of one size share their (cached) table
        for shape, plan in zip(b.shapes, plans):
            kind, (iw, ih), (ow, oh), table, shift, flags = plan[step]
            c = shape[2]
            in_shapes.append((ih, iw, c))
            out_shapes.append((oh, ow, c))
            ksize = 0 if table is None else table[2].shape[1]
            if table is not None and id(table) not in placed:
                start, length, coeffs = table
                placed[id(table)] = used
                flat = np.concatenate([start, length, coeffs.ravel()]).astype(np.int32)
                tables.append(flat)
                used += flat.size
            aux.append(placed.get(id(table), 0))
            params.append((kind, ksize, shift, flags))
        descs = descriptors(in_shapes, out_shapes)
        descs["aux_offset"] = aux
        descs["param"] = params
        table_buf = np.concatenate(tables) if tables else np.zeros(1, np.int32)   # never read when all copy
        b.shapes = in_shapes
        b.step("gp_resample_pass", out_shapes, np.ascontiguousarray(table_buf, np.int32), descs=descs)


# ---------------------------------------------------------------------- filters

# Outputs per thread item of the separable passes (GP_ROW_PIXELS, GP_COLUMN_ROWS of convolve.cu)
ROW_PIXELS = COLUMN_ROWS = 4
# gp_sep_rows_tiled (convolve_tiled.cu): a block filters a segment of ROW_SEGMENT pixels of one row
# through shared memory, for radii up to ROW_APRON; gp_sep_rows takes larger ones.
ROW_SEGMENT, ROW_APRON = 1024, 64


def _filter(b: _Builder, kind: str, *, taps=None, taps2=None, smooth: bool = False, divisor: float = 1.0,
            offset: float = 0.0, unsharp: tuple[float, float] | None = None) -> None:
    """The alpha rule of filters.py: flag translucent images on the device, then one or two passes."""
    n = len(b.shapes)
    src = Buf(b.current)
    descs = descriptors(b.shapes, b.shapes)
    flags = b.scratch(n, np.int32, zeroed=True)      # gp_translucent only ever writes 1
    b.program.launches.append(Launch(b.kernel("gp_translucent"), (src, descs, np.int32(n), flags),
                                     _most_pixels(b.shapes)))
    dst = b.scratch(offsets(b.shapes)[-1], b.dtype)
    offset = np.float32(offset) * np.float32(pixels.value_scale(b.dtype))     # as filters._filter_whole
    if kind == "separable":
        kx, ky = (np.ascontiguousarray(t, np.float32) for t in taps)
        tmp = b.scratch(offsets(b.shapes)[-1], np.float32)
        rx = len(kx) // 2
        if rx <= ROW_APRON:           # one block per row segment
            rows, work = "gp_sep_rows_tiled", _most_items(b.shapes, across=ROW_SEGMENT) * ROW_SEGMENT
        else:
            rows, work = "gp_sep_rows", _most_items(b.shapes, across=ROW_PIXELS)
        b.program.launches.append(Launch(b.kernel(rows), (src, tmp, descs, np.int32(n), kx, np.int32(rx), flags,
                                                          np.int32(smooth)), work))
        mode, amount, threshold = (0, 0.0, 0.0) if unsharp is None else (1, *unsharp)
        if unsharp is not None and filters._fixed_point(ky, b.dtype):
            mode = 2                  # the 8-bit blur is stored before x - blur (filters.unsharp)
        b.program.launches.append(Launch(b.kernel("gp_sep_cols"), (src, tmp, dst, descs, np.int32(n), ky,
                                                         np.int32(len(ky) // 2), flags, np.int32(smooth),
                                                         np.float32(divisor), np.float32(offset), np.int32(mode),
                                                         np.float32(amount), np.float32(threshold)),
                                         _most_items(b.shapes, down=COLUMN_ROWS)))
    else:
        k = np.ascontiguousarray(taps, np.float32).ravel()
        if taps2 is not None:
            k = np.ascontiguousarray(np.concatenate([k, np.asarray(taps2, np.float32).ravel()]))
        b.program.launches.append(Launch(b.kernel("gp_correlate"), (src, dst, descs, np.int32(n), k,
                                                          np.int32(np.asarray(taps).shape[0] // 2), flags,
                                                          np.float32(divisor), np.float32(offset),
                                                          np.int32(taps2 is not None)),
                                         _most_items(b.shapes, across=ROW_PIXELS)))
    b.current = dst.name


def _gaussian_blur(b: _Builder, op: ops.GaussianBlur) -> None:
    k = filters.gaussian_taps(op.sigma, b.dtype)
    _filter(b, "separable", taps=(k, k), smooth=True)


def _box_blur(b: _Builder, op: ops.BoxBlur) -> None:
    k = np.full(2 * op.radius + 1, 1.0 / (2 * op.radius + 1), np.float32)
    _filter(b, "separable", taps=(k, k), smooth=True)


def _sharpen(b: _Builder, op: ops.Sharpen) -> None:
    k = filters._IDENTITY3 + np.float32(op.amount) * (filters._SHARPEN3 - filters._IDENTITY3)
    _filter(b, "2d", taps=k)


def _unsharp(b: _Builder, op: ops.Unsharp) -> None:
    k = filters.gaussian_taps(op.sigma, b.dtype)
    _filter(b, "separable", taps=(k, k), unsharp=(op.amount, filters.unsharp_threshold(op.threshold, b.dtype)))


def _edges(b: _Builder, op: ops.Edges) -> None:
    if op.kind == "sobel":
        _filter(b, "2d", taps=np.outer(filters._SOBEL_SMOOTH, filters._SOBEL_DIFF),
                taps2=np.outer(filters._SOBEL_DIFF, filters._SOBEL_SMOOTH))
    else:
        _filter(b, "2d", taps=filters._LAPLACIAN3)


def _emboss(b: _Builder, op: ops.Emboss) -> None:
    _filter(b, "2d", taps=filters._EMBOSS3)


def _convolve(b: _Builder, op: ops.Convolve) -> None:
    kernel = filters._check_kernel(op.kernel)
    divisor = filters._divisor(kernel, op.divisor)
    pair = filters.separate(kernel)
    if pair is not None:
        _filter(b, "separable", taps=pair, divisor=divisor, offset=op.offset)
    else:
        _filter(b, "2d", taps=kernel, divisor=divisor, offset=op.offset)


# ---------------------------------------------------------------------- watermark

def _watermark(b: _Builder, op: ops.Watermark) -> None:
    """The batch copied, then gp_watermark over the marks' rectangles only (composite.cu)."""
    marks = [composite.mark_for(op, w, h) for h, w, _ in b.shapes]
    unique: dict[int, tuple[np.ndarray, int]] = {}      # a mark shared by images is uploaded once
    for mark in marks:
        if id(mark) not in unique:
            unique[id(mark)] = (mark, sum(m.size for m, _ in unique.values()))
    mark_buf = np.concatenate([m.ravel() for m, _ in unique.values()])
    descs = descriptors(b.shapes, b.shapes)
    work = 1
    for d, (h, w, _), mark in zip(descs, b.shapes, marks):
        mh, mw = mark.shape[:2]
        if op.position == "tile":
            work = max(work, w * h)
        else:
            (x, y), = composite.placements(w, h, mw, mh, op.position, op.margin)
            d["x"], d["y"] = x, y
            work = max(work, max(0, min(x + mw, w) - max(x, 0)) * max(0, min(y + mh, h) - max(y, 0)))
        d["aux_offset"] = unique[id(mark)][1]
        d["param"] = (mw, mh, int(op.position == "tile"), op.margin)
    source = b.copy()
    b.program.launches.append(Launch(b.kernel("gp_watermark"), (source, Buf(b.current), descs, np.int32(len(b.shapes)),
                                                      mark_buf, np.float32(op.opacity)), work))


_PLANNERS = {
    ops.Resize: _resize, ops.Thumbnail: _resize, ops.Crop: _crop, ops.CenterCrop: _center_crop,
    ops.Rotate: _rotate, ops.Flip: _flip, ops.Grayscale: _grayscale, ops.Brightness: _colour_table_op,
    ops.Contrast: _colour_table_op, ops.Window: _window, ops.Normalize: _normalize, ops.Equalize: _equalize,
    ops.BoxBlur: _box_blur, ops.GaussianBlur: _gaussian_blur, ops.Sharpen: _sharpen,
    ops.Unsharp: _unsharp, ops.Edges: _edges, ops.Emboss: _emboss, ops.Convolve: _convolve,
    ops.Watermark: _watermark,
}
