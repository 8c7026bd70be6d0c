"""The op catalogue: one registry entry per op, from which everything else is made.

An op is a small frozen dataclass: it says *what* to compute (docs/design.md §4), never how.
Its entry holds, in one place, what every front end needs:

- its parameters, each with a type, a default, a one-line doc and the values it allows
  (``param(...)``): spec-file validation, ``gpupipe ops``, the docs' op table and the CLI's
  modifier flags are generated from them;
- its command-line flag (``cli = Flag(...)``): the flag, how its value reads, and how its other
  parameters are spelled — the CLI's op flags are generated from it (gpupipe/cli/opflags.py).

Backends map each op class to an implementation; the engine uses ``output_size`` to check a
chain against an image before any pixel work, so a crop outside one image fails that image
alone, on every backend alike. Ops are hashable, picklable and round-trip through
``to_dict``/``op_from_dict``, which is what spec files, spec hashes and distributed engines rely on.
Adding an op: its class here (parameters, flag, summary), its implementations in the backends, tests.
"""

import abc
import dataclasses
import functools
import numbers
import re
import typing
from dataclasses import field
from typing import Any, Callable, ClassVar

from .errors import ProcessingError, UsageError, did_you_mean
from .records import dataclass

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos3")
RESIZE_MODES = ("exact", "fit", "fill", "pad")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center", "tile")
Color = tuple[int, int, int, int]
Kernel = tuple[tuple[float, ...], ...]
BYTES_PER_PIXEL = 4        # an 8-bit image in memory: at most 4 channels (16-bit ones: engine.stages doubles it)
WHITE: Color = (255, 255, 255, 255)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """What one op parameter means and accepts. The base class checks every rule here, so an
    op's own ``_check`` only holds the rules that tie parameters together."""

    doc: str
    choices: tuple[Any, ...] = ()                  # the values allowed (after aliases)
    aliases: tuple[tuple[str, str], ...] = ()      # other spellings accepted: (alias, value)
    least: float | None = None                     # value ≥ least
    above: float | None = None                     # value > above
    most: float | None = None                      # value ≤ most
    convert: Callable[[Any, str], Any] | None = None   # normalises the value (colours, kernels)
    choice_docs: tuple[tuple[str, str], ...] = ()      # what each choice means

    def rule(self) -> str:
        """The allowed values in words, for docs and messages ('' when any value of the type goes)."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.least is not None and self.most is not None:
            return f"within {_number(self.least)}…{_number(self.most)}"
        bounds = [f"{sign} {_number(bound)}" for sign, bound in (("≥", self.least), (">", self.above),
                                                                  ("≤", self.most)) if bound is not None]
        return " and ".join(bounds)


def param(default: Any, doc: str, **rules: Any) -> Any:
    """A dataclass field that is an op parameter: its default, its doc and its rules (Param)."""
    return field(default=default, metadata={"param": Param(doc, **rules)})


def _number(value: float | None) -> str:
    return f"{value:g}" if value is not None else ""


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as the front ends see it: resolved type, default and rules."""

    name: str
    kind: type                  # int, float, str, bool, or tuple for colours and kernels
    optional: bool              # None is allowed
    default: Any
    spec: Param

    @property
    def doc(self) -> str:
        return self.spec.doc

    def shown_default(self) -> str:
        """The default as a user writes it: colours as #rrggbbaa, None as ''."""
        value = self.default
        if value is None:
            return ""
        if isinstance(value, tuple) and len(value) == 4 and all(isinstance(v, int) for v in value):
            return "#{:02x}{:02x}{:02x}{:02x}".format(*value)
        if isinstance(value, tuple):                 # a kernel, as the command line writes it
            return "; ".join(" ".join(f"{v:g}" for v in row) for row in value)
        return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Flag:
    """An op on the command line: ``NAME VALUE`` sets ``sets`` from the value as ``syntax`` reads
    it (a bare ``NAME`` when ``sets`` is empty); each other parameter gets a modifier flag,
    ``--<prefix>-<param>`` unless ``modifiers`` spells it otherwise: a flag name, ``"choices"``
    (one bare flag per allowed value, e.g. --fit/--fill), ``"no"`` (``--no-<param>`` for a
    parameter that defaults to true) or ``"shared:--flag"`` (the value of a run-wide flag)."""

    name: str
    sets: tuple[str, ...] = ()
    metavar: str | None = None
    syntax: Callable[[str, str], "dict[str, Any] | Op"] | None = None   # (text, flag) → parameters or an op
    help: str | None = None                    # default: the op's summary
    prefix: str | None = None                  # default: the op's name with dashes
    modifiers: tuple[tuple[str, str], ...] = ()
    panel: str | None = None                   # its own help panel (default: the ops panel)


# --------------------------------------------------------------------------- the op base


@dataclass(frozen=True)
class ResizePlan:
    """How a resize lands: scale to (width, height), then crop or pad (at most one)."""

    width: int
    height: int
    crop: tuple[int, int, int, int] | None = None      # x, y, w, h after scaling
    pad: tuple[int, int, int, int] | None = None       # canvas w, h, left, top


@dataclass(frozen=True)
class Op:
    """Base of every op. Subclasses set ``name``, ``summary`` and ``cli``, declare their
    parameters with ``param(...)`` and put rules that tie parameters together in ``_check``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    cli: ClassVar[tuple[Flag, ...]] = ()
    shape_preserving: ClassVar[bool] = True
    # Whether the result's values are in the input's units (pixel moves, normalised linear filters):
    # a window after such ops still reads a DICOM's own units (Spec.reads_measured_values).
    keeps_units: ClassVar[bool] = False
    # Whether the op reads the values themselves (window, normalize, equalize): a DICOM whose every
    # chain starts with one is decoded to its measured values, not its display window.
    reads_values: ClassVar[bool] = False
    # What the op allocates per output pixel while it runs on the host: its result and its
    # working copies (float32 planes, Pillow's own image). Measured on the CPU backend at 3000²
    # with 3 and 4 channels (filters 5-7, rotate 3-4), then rounded up.
    work_bytes_per_pixel: ClassVar[int] = 8
    # Raised when the op's output bytes change for the same parameters: the spec's hash counts it,
    # so a journal redoes the inputs an earlier revision made instead of mixing the two.
    revision: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ is None and "summary" in cls.__dict__:     # help(op) says what it does
            cls.__doc__ = cls.summary

    def __post_init__(self) -> None:
        for info in self.params():
            if info.name in self.__dataclass_fields__:
                object.__setattr__(self, info.name, _checked(self.name, info, getattr(self, info.name)))
        self._check()

    def _check(self) -> None:
        """Rules that tie parameters together (each parameter's own rules are checked already)."""

    @classmethod
    def params(cls) -> tuple[ParamInfo, ...]:
        """The op's parameters, as spec files, the CLI and the docs name them."""
        return _params_of(cls)

    @classmethod
    def from_table(cls, params: dict[str, Any]) -> "Op":
        """The op from a spec file's table (its keys besides ``op``)."""
        return cls(**params)

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


@functools.cache
def _params_of(cls: type["Op"]) -> tuple[ParamInfo, ...]:
    found = []
    hints = None
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("param")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with param(...)")
        hint = f.type
        if isinstance(hint, str):           # an op from a module with postponed annotations: resolve them
            hints = hints or typing.get_type_hints(cls)
            hint = hints[f.name]
        kind, optional = _kind(hint)
        found.append(ParamInfo(f.name, kind, optional, f.default, spec))
    return tuple(found)


def _kind(hint: Any) -> tuple[type, bool]:
    """(int | float | str | bool | tuple, whether None is allowed) of a parameter's annotation."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    return (tuple if origin is tuple else origin), optional


def _checked(op: str, info: ParamInfo, value: Any) -> Any:
    """The value, normalised (aliases, colours, kernels), or UsageError naming op, parameter and rule."""
    spec = info.spec
    what = f"{op} {info.name}"
    if value is None:
        if info.optional:
            return None
        raise UsageError(f"{what} needs a value")
    if spec.aliases and isinstance(value, str):
        value = dict(spec.aliases).get(value, value)
    if spec.convert is not None:
        return spec.convert(value, what)
    if not _is(info.kind, value):
        wanted = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[info.kind]
        raise UsageError(f"{what} must be {wanted}, got {value!r}")
    if spec.choices and value not in spec.choices:
        shown = [*map(str, spec.choices), *(alias for alias, _ in spec.aliases)]
        raise UsageError(f"{what} must be {spec.rule()}, got {value!r}"
                         f"{did_you_mean(str(value), shown) if isinstance(value, str) else ''}")
    if ((spec.least is not None and value < spec.least) or (spec.above is not None and value <= spec.above)
            or (spec.most is not None and value > spec.most)):
        raise UsageError(f"{what} must be {spec.rule()}, got {value!r}")
    return value


def _is(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


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
        try:
            parts = list(value)
        except TypeError:
            parts = []
    if len(parts) == 3:
        parts.append(255)
    if len(parts) != 4 or not all(isinstance(p, int) and 0 <= p <= 255 for p in parts):
        raise UsageError(f"{what} must be a colour like '#ffffff', '#00000080' or '255,255,255' (got {value!r})")
    return tuple(parts)  # type: ignore[return-value]


def _kernel(value: Any, what: str) -> Kernel:
    """A square kernel of odd size ≤ 31: rows of numbers, or text like '1 2 1; 2 4 2; 1 2 1'."""
    if isinstance(value, str):
        value = [re.split(r"[\s,]+", row.strip()) for row in value.split(";") if row.strip()]
    try:
        rows = tuple(tuple(float(v) for v in row) for row in value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be rows of numbers, like [[0, -1, 0], [-1, 5, -1], [0, -1, 0]] "
                         f"(on the command line '0 -1 0; -1 5 -1; 0 -1 0'), got {value!r}") from None
    n = len(rows)
    _require(n % 2 == 1 and n <= 31 and all(len(r) == n for r in rows),
             f"{what} must be square with an odd size up to 31, got {n}×{len(rows[0]) if rows else 0}")
    return rows


# --------------------------------------------------------------------------- command-line syntax

SIZE_RE = re.compile(r"^(\d*)(?:[x×](\d*))?$")
CROP_RE = re.compile(r"^(\d+)[x×](\d+)(?:\+(\d+)\+(\d+))?$")


def size_syntax(text: str, flag: str) -> dict[str, Any]:
    """'800x600', '800x' (width only), 'x600' (height only) or '800' (an 800×800 box)."""
    match = SIZE_RE.match(text.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise UsageError(f"{flag} takes WIDTHxHEIGHT, WIDTHx, xHEIGHT or SIZE (e.g. 800x600), got {text!r}")
    width = int(match.group(1)) if match.group(1) else None
    height = int(match.group(2)) if match.group(2) else (width if "x" not in text and "×" not in text else None)
    return {"width": width, "height": height}


def crop_syntax(text: str, flag: str) -> "dict[str, Any] | Op":
    """'640x480+10+20' (a rectangle at x, y) or '640x480' (the centre: a center_crop)."""
    match = CROP_RE.match(text.strip())
    if not match:
        raise UsageError(f"{flag} takes WxH+X+Y (e.g. 640x480+10+20), or WxH for a centre crop, got {text!r}")
    w, h, x, y = (None if g is None else int(g) for g in match.groups())
    if x is None:
        return CenterCrop(w, h)
    return {"x": x, "y": y, "width": w, "height": h}


def centre_syntax(text: str, flag: str) -> dict[str, Any]:
    """'640x480'."""
    match = CROP_RE.match(text.strip())
    if not match or match.group(3) is not None:
        raise UsageError(f"{flag} takes WxH (e.g. 640x480), got {text!r}")
    return {"width": int(match.group(1)), "height": int(match.group(2))}



# --------------------------------------------------------------------------- geometry

SIDE = dict(least=1, most=65500)
MODE_DOCS = (("fit", "inside the box, aspect kept (the default)"), ("exact", "stretched to exactly the box"),
             ("fill", "covering the box, then centre-cropped to it"),
             ("pad", "fit, then padded to the box with the background colour"))


@dataclass(frozen=True)
class Resize(Op):
    """Resample into a box, keeping the aspect ratio (``fit``) unless ``mode`` says otherwise — in
    the API and spec files as on the CLI. Either side may be None: it then follows the aspect ratio."""

    name: ClassVar[str] = "resize"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = ("Resample into width×height; mode fit (the default: inside the box, aspect kept), "
                              "exact (stretch), fill/cover (cover the box, centre-crop) or pad (fit, then pad "
                              "with background).")
    cli: ClassVar[tuple[Flag, ...]] = (Flag(
        "--resize", sets=("width", "height"), metavar="WxH", syntax=size_syntax,
        help="Resize into a box: 800x600, 800x (width only) or x600; mode from --fit (default), --fill, --exact, --pad.",
        modifiers=(("mode", "choices"), ("filter", "--filter"), ("upscale", "no"),
                   ("background", "shared:--background"))),)
    shape_preserving: ClassVar[bool] = False
    width: int | None = param(None, "box width in pixels; none: follows the height and the aspect ratio", **SIDE)
    height: int | None = param(None, "box height in pixels; none: follows the width and the aspect ratio", **SIDE)
    mode: str = param("fit", "how the image meets the box", choices=RESIZE_MODES, choice_docs=MODE_DOCS,
                      aliases=(("cover", "fill"), ("stretch", "exact"), ("contain", "fit")))
    filter: str = param("lanczos3", "resampling filter", choices=FILTERS)
    upscale: bool = param(True, "enlarge images smaller than the box (false: they keep their size)")
    background: Color = param(WHITE, "colour of the padding (mode pad)", convert=_color)

    def _check(self) -> None:
        _require(self.width is not None or self.height is not None, "resize needs a width, a height or both")
        _require(self.mode in ("exact", "fit") or (self.width and self.height),
                 f"resize mode {self.mode} needs both a width and a height")

    def plan(self, width: int, height: int) -> ResizePlan:
        """Exact target sizes for one input: shared by every backend. The last one is kept: an
        input's is asked for three times (its decode hint, the size check, the resize itself),
        and working it out was a third of the op walk's time per tiny input."""
        last = self.__dict__.get("_last_plan")
        if last is not None and last[0] == width and last[1] == height:
            return last[2]
        plan = self._plan(width, height)
        object.__setattr__(self, "_last_plan", (width, height, plan))    # not a field: eq, hash and to_dict ignore it
        return plan

    def _plan(self, width: int, height: int) -> ResizePlan:
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
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--thumbnail", sets=("size", "width", "height"), metavar="N|WxH",
                                            syntax=size_syntax),)

    def __init__(self, width: int | None = None, height: int | None = None, size: int | None = None) -> None:
        if size is not None:
            width = width or size
            height = height or size
        _require(width is not None or height is not None, "thumbnail needs a size")
        height = height if height is not None else width
        width = width if width is not None else height
        super().__init__(width=width, height=height, mode="fit", filter="lanczos3", upscale=False)

    @classmethod
    def params(cls) -> tuple[ParamInfo, ...]:
        return (ParamInfo("size", int, True, None, Param("the box's side: size×size", **SIDE)),
                ParamInfo("width", int, True, None, Param("box width, instead of size", **SIDE)),
                ParamInfo("height", int, True, None, Param("box height, instead of size", **SIDE)))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Crop(Op):
    name: ClassVar[str] = "crop"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = "Cut the rectangle at (x, y) of width×height; it must lie inside the image."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--crop", sets=("x", "y", "width", "height"), metavar="WxH+X+Y",
                                            syntax=crop_syntax,
                                            help="Cut a rectangle: 640x480+10+20; 640x480 alone cuts the centre."),)
    shape_preserving: ClassVar[bool] = False
    x: int = param(0, "left edge in pixels", least=0)
    y: int = param(0, "top edge in pixels", least=0)
    width: int = param(1, "width in pixels", least=1)
    height: int = param(1, "height in pixels", least=1)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.x + self.width > width or self.y + self.height > height:
            raise ProcessingError(
                f"crop {self.width}×{self.height}+{self.x}+{self.y} lies outside the {width}×{height} image")
        return self.width, self.height


@dataclass(frozen=True)
class CenterCrop(Op):
    name: ClassVar[str] = "center_crop"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = "Cut width×height from the middle: offset ((W−w)//2, (H−h)//2)."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--center-crop", sets=("width", "height"), metavar="WxH",
                                            syntax=centre_syntax),)
    shape_preserving: ClassVar[bool] = False
    width: int = param(1, "width in pixels", least=1)
    height: int = param(1, "height in pixels", least=1)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.width > width or self.height > height:
            raise ProcessingError(f"center_crop {self.width}×{self.height} is larger than the {width}×{height} image")
        return self.width, self.height


@dataclass(frozen=True)
class Rotate(Op):
    name: ClassVar[str] = "rotate"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = "Rotate clockwise by 90, 180 or 270 degrees; 90 and 270 swap width and height."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--rotate", sets=("degrees",), metavar="90|180|270"),)
    shape_preserving: ClassVar[bool] = False
    degrees: int = param(90, "clockwise", choices=(90, 180, 270))

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.degrees in (90, 270) else (width, height)


@dataclass(frozen=True)
class Flip(Op):
    name: ClassVar[str] = "flip"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = "Mirror: horizontal (left↔right) or vertical (top↔bottom)."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--flip", sets=("direction",), metavar="h|v"),)
    direction: str = param("horizontal", "which way", choices=("horizontal", "vertical"),
                           aliases=(("h", "horizontal"), ("v", "vertical")))


# --------------------------------------------------------------------------- colour


@dataclass(frozen=True)
class Grayscale(Op):
    name: ClassVar[str] = "grayscale"
    summary: ClassVar[str] = "Luma 0.299 R + 0.587 G + 0.114 B; one channel out (two with alpha)."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--grayscale"),)
    work_bytes_per_pixel: ClassVar[int] = 13        # float32 planes of the luma sum: 12 measured


@dataclass(frozen=True)
class Brightness(Op):
    name: ClassVar[str] = "brightness"
    summary: ClassVar[str] = "Add value (−255…255) to the colour channels, clamped."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--brightness", sets=("value",), metavar="V"),)
    value: float = param(0.0, "added to each colour channel", least=-255, most=255)


@dataclass(frozen=True)
class Contrast(Op):
    name: ClassVar[str] = "contrast"
    summary: ClassVar[str] = "(x − 128) · factor + 128 on the colour channels, clamped; factor ≥ 0."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--contrast", sets=("factor",), metavar="F"),)
    factor: float = param(1.0, "1 leaves the image as it is, 0 makes it flat grey", least=0)


# --------------------------------------------------------------------------- intensity (medical images)


def window_syntax(text: str, flag: str) -> dict[str, Any]:
    """'CENTER,WIDTH', e.g. '40,400' (a CT soft-tissue window) or '2000,1500'."""
    parts = [p.strip() for p in text.split(",")]
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{flag} takes CENTER,WIDTH (e.g. 2000,1500), got {text!r}") from None
    return {"center": center, "width": width}


@dataclass(frozen=True)
class Window(Op):
    name: ClassVar[str] = "window"
    summary: ClassVar[str] = ("The radiologist's window/level on the image's own values: center ± width/2 spread "
                              "from black to white (DICOM's linear window), below it black, above it white.")
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--window", sets=("center", "width"), metavar="CENTER,WIDTH",
                                            syntax=window_syntax),)
    reads_values: ClassVar[bool] = True
    center: float = param(32768.0, "the value shown mid-grey, in the image's values (0-65535 at 16 bits, not "
                                   "scaled; a DICOM's own units, e.g. HU)")
    width: float = param(65536.0, "how many values are spread from black to white", least=1)
    bits: int | None = param(None, "the result's depth: 8, 16, or none for the image's own", choices=(8, 16))

    def in_units(self, slope: float, intercept: float) -> "Window":
        """This window for pixels whose measured value is ``slope · pixel + intercept`` (a DICOM's
        rescale), on the pixels: the same line through the same ends. A negative slope (MONOCHROME1
        pixels, stored inverted) turns it round, as DICOM shows MONOCHROME1: the high end black."""
        low = self.center - 0.5 - (self.width - 1) / 2
        high = self.center - 0.5 + (self.width - 1) / 2
        pixel_low = ((high if slope < 0 else low) - intercept) / slope
        pixel_span = (self.width - 1) / abs(slope)
        return Window(pixel_low + 0.5 + pixel_span / 2, pixel_span + 1, self.bits)


@dataclass(frozen=True)
class Normalize(Op):
    name: ClassVar[str] = "normalize"
    reads_values: ClassVar[bool] = True
    work_bytes_per_pixel: ClassVar[int] = 25       # its histogram counts each value as an int64 (RGB: 24)
    summary: ClassVar[str] = ("Stretch each image so its low percentile is black and its high percentile white "
                              "(colour channels together), clamped.")
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--normalize"),)
    low: float = param(1.0, "the percentile made black", least=0, most=100)
    high: float = param(99.0, "the percentile made white", least=0, most=100)

    def _check(self) -> None:
        _require(self.low < self.high, f"normalize low must be below high, got {self.low:g} and {self.high:g}")


def clahe_syntax(text: str, flag: str) -> dict[str, Any]:
    """'0.02': CLAHE with that clip limit."""
    try:
        return {"clahe": True, "clip_limit": float(text)}
    except ValueError:
        raise UsageError(f"{flag} takes a clip limit (e.g. 0.01), got {text!r}") from None


@dataclass(frozen=True)
class Equalize(Op):
    name: ClassVar[str] = "equalize"
    reads_values: ClassVar[bool] = True
    work_bytes_per_pixel: ClassVar[int] = 49       # CLAHE's float64 blend planes (measured: 42-48 at 1000²)
    summary: ClassVar[str] = ("Histogram equalisation: each value becomes the share of the image's values at or "
                              "below it (colour channels together); with clahe, of its tile's values, clipped, "
                              "blended between tiles (contrast-limited adaptive equalisation).")
    cli: ClassVar[tuple[Flag, ...]] = (
        Flag("--equalize", help="Histogram equalisation: each value becomes the share of the image's values at "
                                "or below it (colour channels together)."),
        Flag("--clahe", sets=("clahe", "clip_limit"), metavar="CLIP", syntax=clahe_syntax,
             help="Contrast-limited adaptive equalisation (CLAHE) with clip limit CLIP (0.01 is usual): "
                  "equalise each of tiles × tiles tiles with its histogram clipped, blending between tiles."),
    )
    clahe: bool = param(False, "equalise tile by tile (contrast-limited adaptive), not the whole image")
    clip_limit: float = param(0.01, "the most one of a tile's 256 histogram bins may hold, as a share of the "
                                    "tile's values (CLAHE; the excess is spread over every bin)", above=0, most=1)
    tiles: int = param(8, "how many tiles across and down (CLAHE)", least=1, most=64)


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class BoxBlur(Op):
    name: ClassVar[str] = "box_blur"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = "Mean over a (2·radius+1)² square, separable, reflect-101 borders."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--box-blur", sets=("radius",), metavar="RADIUS"),)
    radius: int = param(1, "half the square's side, in pixels", least=1, most=500)


@dataclass(frozen=True)
class GaussianBlur(Op):
    name: ClassVar[str] = "gaussian_blur"
    keeps_units: ClassVar[bool] = True
    summary: ClassVar[str] = ("Gaussian of the given sigma, separable, radius ceil(3σ), normalised taps "
                              "(whole 256ths on 8-bit images up to σ 5: exact sums).")
    revision: ClassVar[int] = 2          # 2: the 8-bit taps in whole 256ths (2026-12-06)
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--blur", sets=("sigma",), metavar="SIGMA"),)
    sigma: float = param(1.0, "standard deviation in pixels", above=0, most=100)


@dataclass(frozen=True)
class Sharpen(Op):
    name: ClassVar[str] = "sharpen"
    summary: ClassVar[str] = "3×3 [0,−1,0; −1,5,−1; 0,−1,0] at amount 1, blended with identity otherwise."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--sharpen"),)
    amount: float = param(1.0, "strength: 0 changes nothing, 1 is the plain kernel", least=0, most=100)


@dataclass(frozen=True)
class Unsharp(Op):
    name: ClassVar[str] = "unsharp"
    summary: ClassVar[str] = "x + amount·(x − gaussian(x)) where |x − gaussian(x)| > threshold."
    revision: ClassVar[int] = 2          # 2: on 8-bit pixels, the 8-bit gaussian_blur (2026-12-06)
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--unsharp", sets=("sigma",), metavar="SIGMA",
                                            help="Unsharp mask with a Gaussian of SIGMA: x + amount·(x − blur(x)) "
                                                 "where the difference exceeds the threshold."),)
    sigma: float = param(1.0, "of the Gaussian, in pixels", above=0, most=100)
    amount: float = param(1.0, "how much of the difference is added", least=0)
    threshold: float = param(0.0, "smaller differences (0-255) are left alone", least=0)


@dataclass(frozen=True)
class Edges(Op):
    name: ClassVar[str] = "edges"
    summary: ClassVar[str] = "Edge magnitude: sobel √(gx² + gy²) or the 3×3 laplacian."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--edges"),)
    kind: str = param("sobel", "the operator", choices=("sobel", "laplacian"))


@dataclass(frozen=True)
class Emboss(Op):
    name: ClassVar[str] = "emboss"
    summary: ClassVar[str] = "3×3 [−2,−1,0; −1,1,1; 0,1,2]."
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--emboss"),)


@dataclass(frozen=True)
class Convolve(Op):
    name: ClassVar[str] = "convolve"
    summary: ClassVar[str] = ("General 2-D correlation with an odd n×n kernel (n ≤ 31), divided by divisor "
                              "(default: the kernel's sum, or 1) plus offset; separable kernels run as two passes.")
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--convolve", sets=("kernel",), metavar="'ROW; ROW; …'",
                                            help="Correlate with a square kernel, rows separated by ';': "
                                                 "'1 2 1; 2 4 2; 1 2 1' (divided by its sum unless "
                                                 "--convolve-divisor says otherwise)."),)
    kernel: Kernel = param(((1.0,),), "odd n×n rows of weights, n ≤ 31", convert=_kernel)
    divisor: float | None = param(None, "the sum is divided by it; none: the kernel's sum (1 if that is 0)")
    offset: float = param(0.0, "added after dividing")

    def _check(self) -> None:
        _require(self.divisor is None or self.divisor != 0, "convolve divisor must not be 0")


# --------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class Watermark(Op):
    name: ClassVar[str] = "watermark"
    summary: ClassVar[str] = ("Blend a text or image mark: out = base·(1 − a·opacity) + mark·a·opacity, "
                              "at a corner, the centre, or tiled; margin in pixels.")
    cli: ClassVar[tuple[Flag, ...]] = (
        Flag("--watermark-text", sets=("text",), metavar="TEXT", prefix="watermark", help="Text watermark.",
             panel="Watermark"),
        Flag("--watermark-image", sets=("image",), metavar="PNG", prefix="watermark", panel="Watermark",
             help="Image watermark (its alpha is used)."))
    text: str | None = param(None, "the mark's text (give text or image)")
    image: str | None = param(None, "an image file whose alpha is used (give text or image)")
    position: str = param("bottom-right", "where the mark goes", choices=POSITIONS)
    margin: int = param(16, "distance from the edges in pixels", least=0)
    opacity: float = param(0.5, "0 invisible, 1 opaque", least=0, most=1)
    size: int | None = param(None, "text height in pixels; none: 4 % of the shorter side", least=1)
    scale: float | None = param(None, "an image mark's width as a fraction of the image's; none: its own size",
                                above=0, most=1)
    color: Color = param(WHITE, "text colour", convert=_color)
    font: str | None = param(None, "a TTF/OTF font file; none: Pillow's built-in font")
    # The blend runs in float32 over the whole covered area (and the mark's own planes): 75 measured
    work_bytes_per_pixel: ClassVar[int] = 80

    def _check(self) -> None:
        _require((self.text is None) != (self.image is None), "watermark needs exactly one of text or image")
        _require(self.text is None or self.text.strip() != "", "watermark text must not be empty")


# --------------------------------------------------------------------------- user code on the host


class Reject(Exception):
    """Raised by a user op: the input writes no output and is recorded as ``rejected`` with this
    reason (counted in the summary, the report, the journal and the metrics; a re-run skips it)."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = str(reason)


class Tagged(typing.NamedTuple):
    """What a user op returns to attach tags to the input as well: ``Tagged(image, {"nsfw": 0.02})``.
    Tags go into the outcome (the report) and the journal; later ops' tags are merged over earlier ones."""

    image: Any
    tags: dict[str, Any]


@dataclass(frozen=True)
class HostOp(Op, abc.ABC):
    """An op that runs Python on the image on the host, between device ops: the engine hands
    ``run`` each image as a NumPy HWC array, uint8 or uint16 (H×W×1 for grey), and takes back an image of any
    size, ``Tagged(image, tags)``, or ``Reject(reason)``. On a GPU the batch is downloaded for it
    and uploaded again after (the cost of leaving the device). Third-party packages register
    HostOp subclasses under the ``gpupipe.ops`` entry-point group (see ``plugin_ops``)."""

    @abc.abstractmethod
    def run(self, image: Any) -> Any:
        """The image (NumPy HWC, uint8 or uint16) this op makes of ``image``, or Tagged(image, tags); or Reject."""

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height             # unknown until it ran: the engine takes the size it returns


def _function_name(value: Any, what: str) -> str:
    """'package.module:name', or 'path/to/file.py:name'."""
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise UsageError(f"{what} must be 'package.module:function' or 'file.py:function', got {value!r}")
    return value


def _arguments(value: Any, what: str) -> tuple[tuple[str, Any], ...]:
    """Keyword arguments for a user function: a table, pairs, or text 'a=1; b="x"' (TOML values)."""
    if isinstance(value, str):
        import tomllib
        try:
            value = tomllib.loads(value.replace(";", "\n"))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{what} must read as 'name = value; …' (TOML values), got {value!r}: {exc}") from None
    if isinstance(value, dict):
        value = value.items()
    try:
        pairs = tuple(sorted((str(k), _frozen(v)) for k, v in value))
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a table of names and values, got {value!r}") from None
    return pairs


def _frozen(value: Any) -> Any:
    """Lists as tuples, tables as sorted pairs: hashable, so ops stay hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True)
class Python(HostOp):
    name: ClassVar[str] = "python"
    summary: ClassVar[str] = ("Call a Python function on the image (a NumPy HWC array, uint8 or uint16) that returns an image, "
                              "or Tagged(image, tags), or raises gpupipe.Reject(reason); runs on the CPU, in the "
                              "worker processes.")
    cli: ClassVar[tuple[Flag, ...]] = (Flag("--python", sets=("function",), metavar="MODULE:NAME",
                                            help="Call a Python function on each image: package.module:function or "
                                                 "file.py:function (see `gpupipe ops python`)."),)
    function: str = param("", "the function, as package.module:function or file.py:function",
                          convert=_function_name)
    arguments: tuple[tuple[str, Any], ...] = param((), "keyword arguments it is called with (spec files: any "
                                                       "other keys of the op's table)", convert=_arguments)

    @classmethod
    def from_table(cls, params: dict[str, Any]) -> "Python":
        """A spec table's keys besides ``function`` are the function's keyword arguments."""
        table = dict(params)
        function = table.pop("function", None)
        arguments = table.pop("arguments", {})
        return cls(function, {**dict(_arguments(arguments, "python arguments")), **table})

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "function": self.function, **{k: _plain(v) for k, v in self.arguments}}

    def run(self, image: Any) -> Any:
        from .userops import load_function
        return load_function(self.function)(image, **dict(self.arguments))


# --------------------------------------------------------------------------- registry

OP_CLASSES: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (Resize, Thumbnail, Crop, CenterCrop, Rotate, Flip, Grayscale, Brightness, Contrast,
                Window, Normalize, Equalize,
                BoxBlur, GaussianBlur, Sharpen, Unsharp, Edges, Emboss, Convolve, Watermark, Python)
}
ALIASES = {"blur": "gaussian_blur", "gaussian": "gaussian_blur", "centre_crop": "center_crop",
           "greyscale": "grayscale", "gray": "grayscale", "fit": "resize", "cover": "resize",
           "normalise": "normalize", "equalise": "equalize", "window_level": "window"}


def param_names(cls: type[Op]) -> list[str]:
    return [info.name for info in cls.params()]


def op_class(name: str) -> type[Op]:
    """The op class a name (or an alias) means; UsageError with a suggestion otherwise."""
    key = name.strip().lower().replace("-", "_")
    cls = OP_CLASSES.get(ALIASES.get(key, key)) or plugin_ops().get(key)
    if cls is None:
        known = [*OP_CLASSES, *plugin_ops()]
        raise UsageError(f"unknown op {name!r}{did_you_mean(key, [*known, *ALIASES])}; known ops: "
                         f"{', '.join(known)} (see `gpupipe ops`)")
    return cls


@functools.cache
def plugin_ops() -> dict[str, type[HostOp]]:
    """Ops that installed packages register under the ``gpupipe.ops`` entry-point group, each a
    HostOp subclass (``[project.entry-points."gpupipe.ops"] blur_faces = "mypkg.ops:BlurFaces"``).
    Looked up only when a spec names an op gpupipe does not have, or `gpupipe ops` lists them,
    so a run that uses none pays nothing at start-up."""
    from importlib.metadata import entry_points
    found: dict[str, type[HostOp]] = {}
    for entry in entry_points(group="gpupipe.ops"):
        try:
            cls = entry.load()
        except Exception as exc:          # a broken plug-in must not break gpupipe
            import logging
            logging.getLogger("gpupipe").warning("op plug-in %s (%s) cannot be loaded: %s", entry.name,
                                                 entry.value, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, HostOp)) or cls.name in OP_CLASSES:
            import logging
            logging.getLogger("gpupipe").warning("op plug-in %s (%s) is not a new gpupipe.ops.HostOp subclass: "
                                                 "ignored", entry.name, entry.value)
            continue
        found[cls.name] = cls
    return found


def op_from_dict(table: dict[str, Any]) -> Op:
    """Build an op from a spec-file table like ``{op = "resize", width = 800, mode = "fit"}``."""
    params = dict(table)
    name = params.pop("op", None)
    if not isinstance(name, str):
        raise UsageError(f"each op needs an 'op' name, e.g. {{op = \"thumbnail\", size = 256}} (got {table!r})")
    key = name.strip().lower().replace("-", "_")
    if key in ("fit", "cover") and "mode" not in params:
        params["mode"] = key
    cls = op_class(name)
    allowed = param_names(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown and cls is not Python:             # its other keys are the function's arguments
        raise UsageError(f"op {cls.name} has no parameter {', '.join(map(repr, unknown))}"
                         f"{did_you_mean(unknown[0], allowed)}; its parameters: {', '.join(allowed) or 'none'}")
    try:
        return cls.from_table(params)
    except TypeError as exc:
        raise UsageError(f"op {cls.name}: {exc}") from None


def chain_output_size(ops: tuple[Op, ...] | list[Op], width: int, height: int) -> tuple[int, int]:
    for op in ops:
        width, height = op.output_size(width, height)
    return width, height
