"""The op catalogue: names, parameters, validation and output sizes.

An op is a small frozen dataclass: it says *what* to compute (docs/design.md §4),
never how. Backends map each op class to an implementation; the engine uses
``output_size`` to check a chain against an image before any pixel work, so a
crop outside one image fails that image alone, on every backend alike.

Ops are hashable, picklable and round-trip through ``to_dict``/``op_from_dict``,
which is what spec files, spec hashes and distributed engines rely on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ProcessingError, UsageError, did_you_mean

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos3")
RESIZE_MODES = ("exact", "fit", "fill", "pad")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center", "tile")
Color = tuple[int, int, int, int]
BYTES_PER_PIXEL = 4        # an image in memory: at most 4 channels of uint8


@dataclass(frozen=True)
class ResizePlan:
    """How a resize lands: scale to (width, height), then crop or pad (at most one)."""

    width: int
    height: int
    crop: tuple[int, int, int, int] | None = None      # x, y, w, h after scaling
    pad: tuple[int, int, int, int] | None = None       # canvas w, h, left, top


@dataclass(frozen=True)
class Op:
    """Base of every op. Subclasses set ``name`` and ``summary`` and validate in ``__post_init__``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    shape_preserving: ClassVar[bool] = True
    # What the op allocates per output pixel while it runs on the host: its result and its
    # working copies (float32 planes, Pillow's own image). Measured on the CPU backend at 3000²
    # with 3 and 4 channels (filters 5-7, rotate 3-4), then rounded up.
    work_bytes_per_pixel: ClassVar[int] = 8

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Size of the result for a width×height input; ProcessingError if the op cannot apply."""
        return width, height

    def peak_bytes(self, width: int, height: int) -> int:
        """The most memory the op allocates on the host for a width×height input, its result
        included and its input not: known, like ``output_size``, before any pixel work."""
        out_w, out_h = self.output_size(width, height)
        return self.work_bytes_per_pixel * out_w * out_h

    def decode_hint(self, width: int, height: int) -> tuple[int, int] | None:
        """For a leading shrink: the smallest decoded size that still gives an exact result."""
        return None

    def to_dict(self) -> dict[str, Any]:
        params = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"op": self.name, **params}

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "op")
        return f"{self.name}({params})"


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _color(value: Any, what: str) -> Color:
    """Accept '#rrggbb', '#rrggbbaa', 'r,g,b[,a]' or a 3/4-sequence; return RGBA ints."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("#") and len(text) in (7, 9):
            try:
                parts = [int(text[i:i + 2], 16) for i in range(1, len(text), 2)]
            except ValueError:
                parts = []
        else:
            try:
                parts = [int(p) for p in text.split(",")]
            except ValueError:
                parts = []
    else:
        parts = list(value)
    if len(parts) == 3:
        parts.append(255)
    if len(parts) != 4 or not all(isinstance(p, int) and 0 <= p <= 255 for p in parts):
        raise UsageError(f"{what} must be a colour like '#ffffff', '#00000080' or '255,255,255' (got {value!r})")
    return tuple(parts)  # type: ignore[return-value]


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Resize(Op):
    """Resample into a box, keeping the aspect ratio (``fit``) unless ``mode`` says otherwise — in
    the API and spec files as on the CLI. Either side may be None: it then follows the aspect ratio."""

    name: ClassVar[str] = "resize"
    summary: ClassVar[str] = ("Resample into width×height; mode fit (the default: inside the box, aspect kept), "
                              "exact (stretch), fill/cover (cover the box, centre-crop) or pad (fit, then pad "
                              "with background).")
    shape_preserving: ClassVar[bool] = False
    width: int | None = None
    height: int | None = None
    mode: str = "fit"
    filter: str = "lanczos3"
    upscale: bool = True
    background: Color = (255, 255, 255, 255)

    def __post_init__(self) -> None:
        mode = {"cover": "fill", "stretch": "exact", "contain": "fit"}.get(self.mode, self.mode)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "background", _color(self.background, "resize background"))
        _require(mode in RESIZE_MODES, f"resize mode must be one of {', '.join(RESIZE_MODES)} (or cover), got "
                                       f"{self.mode!r}{did_you_mean(self.mode, (*RESIZE_MODES, 'cover'))}")
        _require(self.filter in FILTERS, f"resize filter must be one of {', '.join(FILTERS)}, got {self.filter!r}"
                                         f"{did_you_mean(self.filter, FILTERS)}")
        _require(self.width is not None or self.height is not None, "resize needs a width, a height or both")
        for side in (self.width, self.height):
            _require(side is None or (isinstance(side, int) and 1 <= side <= 65500),
                     f"resize sides must be whole numbers from 1 to 65500, got {side!r}")
        _require(mode in ("exact", "fit") or (self.width and self.height),
                 f"resize mode {mode} needs both a width and a height")

    def plan(self, width: int, height: int) -> ResizePlan:
        """Exact target sizes for one input: shared by every backend."""
        box_w, box_h = self.width, self.height
        if box_w is None or box_h is None:
            # One side given: the other follows the aspect ratio, whatever the mode.
            scale = box_w / width if box_w is not None else box_h / height  # type: ignore[operator]
            return self._scaled(width, height, scale)
        if self.mode == "exact":
            if not self.upscale and (box_w > width or box_h > height):
                box_w, box_h = min(box_w, width), min(box_h, height)
            return ResizePlan(box_w, box_h)
        if self.mode in ("fit", "pad"):
            plan = self._scaled(width, height, min(box_w / width, box_h / height), box=(box_w, box_h))
            if self.mode == "pad":
                left, top = (box_w - plan.width) // 2, (box_h - plan.height) // 2
                return ResizePlan(plan.width, plan.height, pad=(box_w, box_h, left, top))
            return plan
        # fill: cover the box, then centre-crop to it.
        scale = max(box_w / width, box_h / height)
        if not self.upscale and scale > 1:
            new_w, new_h = width, height
        else:
            new_w, new_h = max(box_w, round(width * scale)), max(box_h, round(height * scale))
        crop_w, crop_h = min(box_w, new_w), min(box_h, new_h)
        return ResizePlan(new_w, new_h, crop=((new_w - crop_w) // 2, (new_h - crop_h) // 2, crop_w, crop_h))

    def _scaled(self, width: int, height: int, scale: float, box: tuple[int, int] | None = None) -> ResizePlan:
        if not self.upscale and scale > 1:
            return ResizePlan(width, height)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        if box is not None:           # rounding must never step outside the box
            new_w, new_h = min(new_w, box[0]), min(new_h, box[1])
        return ResizePlan(new_w, new_h)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        plan = self.plan(width, height)
        if plan.crop:
            return plan.crop[2], plan.crop[3]
        if plan.pad:
            return plan.pad[0], plan.pad[1]
        return plan.width, plan.height

    def peak_bytes(self, width: int, height: int) -> int:
        """Pillow's resampler: a pass over the input (its RGBA image and the intermediate, about
        6 bytes an input pixel when shrinking), then about 13 bytes per scaled pixel (its RGBA
        result and the array copied from it: 12 measured), then the canvas a pad allocates."""
        plan = self.plan(width, height)
        canvas = plan.pad[0] * plan.pad[1] if plan.pad else 0
        return 6 * width * height + 13 * plan.width * plan.height + BYTES_PER_PIXEL * canvas

    def decode_hint(self, width: int, height: int) -> tuple[int, int] | None:
        plan = self.plan(width, height)
        if self.filter == "nearest" or plan.width >= width or plan.height >= height:
            return None
        # docs/design.md §4: a reduced DCT decode must leave at least twice the target size.
        hint = 2 * plan.width, 2 * plan.height
        return hint if hint[0] < width and hint[1] < height else None


@dataclass(frozen=True)
class Thumbnail(Resize):
    """Fit inside a box with lanczos3, never upscaling."""

    name: ClassVar[str] = "thumbnail"
    summary: ClassVar[str] = "Fit inside size×size (or width×height) with lanczos3, never upscaling: 200×100 into 50 gives 50×25."

    def __init__(self, width: int | None = None, height: int | None = None, size: int | None = None) -> None:
        if size is not None:
            width = width or size
            height = height or size
        _require(width is not None or height is not None, "thumbnail needs a size")
        height = height if height is not None else width
        width = width if width is not None else height
        super().__init__(width=width, height=height, mode="fit", filter="lanczos3", upscale=False)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Crop(Op):
    name: ClassVar[str] = "crop"
    summary: ClassVar[str] = "Cut the rectangle at (x, y) of width×height; it must lie inside the image."
    shape_preserving: ClassVar[bool] = False
    x: int = 0
    y: int = 0
    width: int = 1
    height: int = 1

    def __post_init__(self) -> None:
        _require(min(self.x, self.y) >= 0 and min(self.width, self.height) >= 1,
                 f"crop needs x, y ≥ 0 and width, height ≥ 1 (got {self.x},{self.y} {self.width}×{self.height})")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.x + self.width > width or self.y + self.height > height:
            raise ProcessingError(
                f"crop {self.width}×{self.height}+{self.x}+{self.y} lies outside the {width}×{height} image")
        return self.width, self.height


@dataclass(frozen=True)
class CenterCrop(Op):
    name: ClassVar[str] = "center_crop"
    summary: ClassVar[str] = "Cut width×height from the middle: offset ((W−w)//2, (H−h)//2)."
    shape_preserving: ClassVar[bool] = False
    width: int = 1
    height: int = 1

    def __post_init__(self) -> None:
        _require(min(self.width, self.height) >= 1, "center_crop needs width and height ≥ 1")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.width > width or self.height > height:
            raise ProcessingError(f"center_crop {self.width}×{self.height} is larger than the {width}×{height} image")
        return self.width, self.height


@dataclass(frozen=True)
class Rotate(Op):
    name: ClassVar[str] = "rotate"
    summary: ClassVar[str] = "Rotate clockwise by 90, 180 or 270 degrees; 90 and 270 swap width and height."
    shape_preserving: ClassVar[bool] = False
    degrees: int = 90

    def __post_init__(self) -> None:
        _require(self.degrees in (90, 180, 270), f"rotate takes 90, 180 or 270 degrees, got {self.degrees!r}")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.degrees in (90, 270) else (width, height)


@dataclass(frozen=True)
class Flip(Op):
    name: ClassVar[str] = "flip"
    summary: ClassVar[str] = "Mirror: horizontal (left↔right) or vertical (top↔bottom)."
    direction: str = "horizontal"

    def __post_init__(self) -> None:
        direction = {"h": "horizontal", "v": "vertical"}.get(self.direction, self.direction)
        object.__setattr__(self, "direction", direction)
        _require(direction in ("horizontal", "vertical"), f"flip takes horizontal (h) or vertical (v), got "
                                                          f"{self.direction!r}{did_you_mean(direction, ('horizontal', 'vertical'))}")


# --------------------------------------------------------------------------- colour


@dataclass(frozen=True)
class Grayscale(Op):
    name: ClassVar[str] = "grayscale"
    summary: ClassVar[str] = "Luma 0.299 R + 0.587 G + 0.114 B; one channel out (two with alpha)."
    work_bytes_per_pixel: ClassVar[int] = 13        # float32 planes of the luma sum: 12 measured


@dataclass(frozen=True)
class Brightness(Op):
    name: ClassVar[str] = "brightness"
    summary: ClassVar[str] = "Add value (−255…255) to the colour channels, clamped."
    value: float = 0.0

    def __post_init__(self) -> None:
        _require(-255 <= self.value <= 255, f"brightness must be within -255…255, got {self.value}")


@dataclass(frozen=True)
class Contrast(Op):
    name: ClassVar[str] = "contrast"
    summary: ClassVar[str] = "(x − 128) · factor + 128 on the colour channels, clamped; factor ≥ 0."
    factor: float = 1.0

    def __post_init__(self) -> None:
        _require(self.factor >= 0, f"contrast factor must be ≥ 0, got {self.factor}")


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class BoxBlur(Op):
    name: ClassVar[str] = "box_blur"
    summary: ClassVar[str] = "Mean over a (2·radius+1)² square, separable, reflect-101 borders."
    radius: int = 1

    def __post_init__(self) -> None:
        _require(isinstance(self.radius, int) and 1 <= self.radius <= 500, f"box_blur radius must be a whole number 1…500, got {self.radius!r}")


@dataclass(frozen=True)
class GaussianBlur(Op):
    name: ClassVar[str] = "gaussian_blur"
    summary: ClassVar[str] = "Gaussian of the given sigma, separable, radius ceil(3σ), normalised taps."
    sigma: float = 1.0

    def __post_init__(self) -> None:
        _require(0 < self.sigma <= 100, f"gaussian_blur sigma must be > 0 and ≤ 100, got {self.sigma}")


@dataclass(frozen=True)
class Sharpen(Op):
    name: ClassVar[str] = "sharpen"
    summary: ClassVar[str] = "3×3 [0,−1,0; −1,5,−1; 0,−1,0] at amount 1, blended with identity otherwise."
    amount: float = 1.0

    def __post_init__(self) -> None:
        _require(0 <= self.amount <= 100, f"sharpen amount must be within 0…100, got {self.amount}")


@dataclass(frozen=True)
class Unsharp(Op):
    name: ClassVar[str] = "unsharp"
    summary: ClassVar[str] = "x + amount·(x − gaussian(x)) where |x − gaussian(x)| > threshold."
    sigma: float = 1.0
    amount: float = 1.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        _require(0 < self.sigma <= 100, f"unsharp sigma must be > 0 and ≤ 100, got {self.sigma}")
        _require(self.amount >= 0 and self.threshold >= 0, "unsharp amount and threshold must be ≥ 0")


@dataclass(frozen=True)
class Edges(Op):
    name: ClassVar[str] = "edges"
    summary: ClassVar[str] = "Edge magnitude: sobel √(gx² + gy²) or the 3×3 laplacian."
    kind: str = "sobel"

    def __post_init__(self) -> None:
        _require(self.kind in ("sobel", "laplacian"), f"edges kind must be sobel or laplacian, got {self.kind!r}")


@dataclass(frozen=True)
class Emboss(Op):
    name: ClassVar[str] = "emboss"
    summary: ClassVar[str] = "3×3 [−2,−1,0; −1,1,1; 0,1,2]."


@dataclass(frozen=True)
class Convolve(Op):
    name: ClassVar[str] = "convolve"
    summary: ClassVar[str] = ("General 2-D correlation with an odd n×n kernel (n ≤ 31), divided by divisor "
                              "(default: the kernel's sum, or 1) plus offset; separable kernels run as two passes.")
    kernel: tuple[tuple[float, ...], ...] = ((1.0,),)
    divisor: float | None = None
    offset: float = 0.0

    def __post_init__(self) -> None:
        rows = tuple(tuple(float(v) for v in row) for row in self.kernel)
        object.__setattr__(self, "kernel", rows)
        n = len(rows)
        _require(n % 2 == 1 and n <= 31 and all(len(r) == n for r in rows),
                 f"convolve kernel must be square with an odd size up to 31, got {n}×{len(rows[0]) if rows else 0}")
        _require(self.divisor is None or self.divisor != 0, "convolve divisor must not be 0")


# --------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class Watermark(Op):
    name: ClassVar[str] = "watermark"
    summary: ClassVar[str] = ("Blend a text or image mark: out = base·(1 − a·opacity) + mark·a·opacity, "
                              "at a corner, the centre, or tiled; margin in pixels.")
    text: str | None = None
    image: str | None = None
    position: str = "bottom-right"
    margin: int = 16
    opacity: float = 0.5
    size: int | None = None             # text height in px; default 4 % of the shorter side
    scale: float | None = None          # image mark width as a fraction of the image width
    color: Color = (255, 255, 255, 255)
    font: str | None = None
    # The blend runs in float32 over the whole covered area (and the mark's own planes): 75 measured
    work_bytes_per_pixel: ClassVar[int] = 80

    def __post_init__(self) -> None:
        _require((self.text is None) != (self.image is None), "watermark needs exactly one of text or image")
        _require(self.text is None or self.text.strip() != "", "watermark text must not be empty")
        _require(self.position in POSITIONS, f"watermark position must be one of {', '.join(POSITIONS)}, got "
                                             f"{self.position!r}{did_you_mean(self.position, POSITIONS)}")
        _require(0 <= self.opacity <= 1, f"watermark opacity must be within 0…1, got {self.opacity}")
        _require(self.margin >= 0, "watermark margin must be ≥ 0")
        _require(self.size is None or self.size >= 1, "watermark size must be ≥ 1 pixel")
        _require(self.scale is None or 0 < self.scale <= 1, "watermark scale must be within (0, 1]")
        object.__setattr__(self, "color", _color(self.color, "watermark color"))


# --------------------------------------------------------------------------- registry

OP_CLASSES: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (Resize, Thumbnail, Crop, CenterCrop, Rotate, Flip, Grayscale, Brightness, Contrast,
                BoxBlur, GaussianBlur, Sharpen, Unsharp, Edges, Emboss, Convolve, Watermark)
}
ALIASES = {"blur": "gaussian_blur", "gaussian": "gaussian_blur", "centre_crop": "center_crop",
           "greyscale": "grayscale", "gray": "grayscale", "fit": "resize", "cover": "resize"}


def param_names(cls: type[Op]) -> list[str]:
    if cls is Thumbnail:
        return ["size", "width", "height"]
    return [f.name for f in dataclasses.fields(cls)]


def op_from_dict(table: dict[str, Any]) -> Op:
    """Build an op from a spec-file table like ``{op = "resize", width = 800, mode = "fit"}``."""
    params = dict(table)
    name = params.pop("op", None)
    if not isinstance(name, str):
        raise UsageError(f"each op needs an 'op' name, e.g. {{op = \"thumbnail\", size = 256}} (got {table!r})")
    key = name.strip().lower().replace("-", "_")
    if key in ("fit", "cover") and "mode" not in params:
        params["mode"] = key
    cls = OP_CLASSES.get(ALIASES.get(key, key))
    if cls is None:
        raise UsageError(f"unknown op {name!r}{did_you_mean(key, [*OP_CLASSES, *ALIASES])}; known ops: "
                         f"{', '.join(OP_CLASSES)} (see `gpupipe ops`)")
    allowed = param_names(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(f"op {cls.name} has no parameter {', '.join(map(repr, unknown))}"
                         f"{did_you_mean(unknown[0], allowed)}; its parameters: {', '.join(allowed) or 'none'}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"op {cls.name}: {exc}") from None


def chain_output_size(ops: tuple[Op, ...] | list[Op], width: int, height: int) -> tuple[int, int]:
    for op in ops:
        width, height = op.output_size(width, height)
    return width, height
