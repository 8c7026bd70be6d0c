"""The pipeline spec: which variants to make of every input, and how to name them.

A spec is one or more named variants, each an op chain plus an output format,
quality and file-name template. It comes from CLI flags, a TOML file or Python
objects, is validated up front (so a typo is an exit-2 message, not a failure
on file 10 000), and hashes stably so a journal can tell when it changed.

    [defaults]                      # optional: applies to every variant
    format = "webp"
    quality = 85

    [[variant]]
    name = "thumb"
    ops = [{ op = "thumbnail", size = 256 }]
    format = "jpeg"

    [[variant]]
    name = "web"
    template = "web/{stem}.{ext}"
    ops = [
      { op = "resize", width = 1600, height = 1600, mode = "fit" },
      { op = "watermark", text = "© me", position = "bottom-right", opacity = 0.5 },
    ]
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import stat
import string
from dataclasses import field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import codecs, digests
from .codecs import formats
from .codecs.formats import DEFAULT_MAX_PIXELS
from .errors import BadOutputName, UsageError, did_you_mean
from .ops import Op, Python, Resize, Watermark, Window, _color, op_from_dict
from .records import dataclass
from .sidefiles import printable, read_resource

TEMPLATE_FIELDS = {"stem", "variant", "ext", "name", "suffix"}
DEFAULT_QUALITY = 85


@dataclass(frozen=True)
class Variant:
    """One output per input: an op chain, an encoding and a file-name template."""

    ops: tuple[Op, ...] = ()
    name: str | None = None
    format: str | None = None          # None: keep the input's format where we can write it, else PNG
    quality: int = DEFAULT_QUALITY
    template: str | None = None        # default {stem}_{variant}.{ext}, or {stem}.{ext} when unnamed
    background: tuple[int, int, int, int] = (255, 255, 255, 255)   # alpha flattening for JPEG

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        for op in self.ops:
            if not isinstance(op, Op):
                raise UsageError(f"variant {self.name or '(default)'}: {op!r} is not an op (use gpupipe.ops.*)")
        if self.name is not None and (not self.name or any(c in self.name for c in "/\\\0")
                                      or self.name in (".", "..")):
            raise UsageError(f"variant name {self.name!r} must be non-empty, not '.' or '..', and contain no "
                             "slashes")
        if self.format is not None:
            object.__setattr__(self, "format", codecs.normalise_format(self.format))
        if not (isinstance(self.quality, int) and 1 <= self.quality <= 100):
            raise UsageError(f"quality must be a whole number from 1 to 100, got {self.quality!r}")
        object.__setattr__(self, "background", _color(self.background, "background"))
        template = self.template or ("{stem}_{variant}.{ext}" if self.name else "{stem}.{ext}")
        _check_template(template, self.name)
        # Kept, not fields (equality, hashing and repr ignore them): the template in use, and the
        # file extension of each input format met, which output_path asks for every input.
        object.__setattr__(self, "_template", template)
        object.__setattr__(self, "_extensions", {})

    @property
    def effective_template(self) -> str:
        """The file-name template in use: the one given, or the default for a named or unnamed variant."""
        return self._template

    def output_format(self, input_format: str) -> str:
        return self.format or formats.kept(input_format)

    def output_path(self, relative: str, input_format: str) -> str:
        """Where this variant of the input at ``relative`` ("a/b.jpg") goes, relative to the output
        root, as text: "a/b_thumb.webp", with no empty, "." or ".." part. BadOutputName when the
        template makes no valid path strictly inside it for this input (e.g. a file named
        '...png', whose stem is '..')."""
        ext = self._extensions.get(input_format)
        if ext is None:
            ext = self._extensions[input_format] = codecs.extension_for(self.output_format(input_format))
        # On the text of the path, as pathlib's name, stem and suffix would say: this runs for every
        # input and variant on the run's one coordinating thread (pathlib's properties took 4 µs).
        folder, _, name = relative.rpartition("/")
        dot = name.rfind(".")
        stem, suffix = (name[:dot], name[dot + 1:]) if 0 < dot < len(name) - 1 else (name, "")
        made = _fill_template(self._template, stem=stem, variant=self.name or "", ext=ext, name=name, suffix=suffix)
        text = f"{folder}/{made}" if folder else made
        problem = _path_problem(text)
        if problem:
            raise BadOutputName(f"name template {self.effective_template!r} gives {text!r} for this input: {problem}")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "quality": self.quality,
                "template": self.effective_template, "background": list(self.background),
                "ops": [op.to_dict() for op in self.ops]}


def _check_template(template: str, variant: str | None = None) -> None:
    """UsageError unless the template is plain text and plain known fields ({stem}, not {stem:>9},
    {stem!r} or {stem.x}: format specs can pad with '/' or '.', and attribute access reaches
    Python objects) and gives a valid relative path for an ordinary input."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"name template {template!r} is malformed: {exc}") from None
    known = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS:
            raise UsageError(f"name template {template!r} uses unknown field {{{field_name}}}; known: {known}")
        if format_spec or conversion:
            raise UsageError(f"name template {template!r}: {{{field_name}}} has a format spec or conversion; "
                             f"only plain fields are allowed: {known}")
    sample = _fill_template(template, stem="photo", variant=variant or "", ext="jpg", name="photo.jpg",
                            suffix="jpg")
    problem = _path_problem(sample)
    if problem:
        raise UsageError(f"name template {template!r} gives {sample!r} for photo.jpg: {problem}; the output "
                         "must be a relative path inside the output directory")


def _fill_template(template: str, **fields: str) -> str:
    """The template with its fields filled in. _check_template let through plain fields only, for
    which str.format is exact (it only substitutes the values), and it runs in C: this is asked
    for every input and variant."""
    return template.format_map(fields)


NAME_MAX = 255          # bytes in one path component on Linux filesystems


def _path_problem(text: str) -> str | None:
    """Why ``text`` is not a path strictly inside the output directory, or None."""
    if not text:
        return "it is empty"
    if "\0" in text:
        return "it contains a NUL character"
    if text.startswith("/"):
        return "it is an absolute path"
    for part in text.split("/"):
        if part in ("", ".", ".."):
            return f"it has a {part!r} component" if part else "it has an empty component"
        if len(part) * 4 > NAME_MAX and len(os.fsencode(part)) > NAME_MAX:     # UTF-8: 4 bytes a character at most
            return f"the name {part[:40]!r}… is longer than {NAME_MAX} bytes"
    return None


@dataclass(frozen=True)
class Spec:
    """All variants to make of every input. Decode happens once per input for all of them."""

    variants: tuple[Variant, ...] = field(default_factory=lambda: (Variant(),))

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants:
            raise UsageError("a spec needs at least one variant")
        names = [v.name for v in self.variants]
        if len(self.variants) > 1 and (None in names or len(set(names)) != len(names)):
            raise UsageError("with several variants every variant needs a distinct name")

    # ----------------------------------------------------------------- builders

    @classmethod
    def single(cls, ops: Iterable[Op] = (), *, format: str | None = None, quality: int = DEFAULT_QUALITY,
               name: str | None = None, template: str | None = None,
               background: Any = (255, 255, 255, 255)) -> "Spec":
        """A spec with one variant: what the CLI flags build."""
        return cls((Variant(tuple(ops), name=name, format=format, quality=quality,
                            template=template, background=background),))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "spec", base_dir: Path | None = None) -> "Spec":
        """``base_dir``: where relative watermark image and font paths are looked up (the spec file's folder)."""
        data = dict(data)
        defaults = data.pop("defaults", {})
        tables = data.pop("variant", data.pop("variants", None))
        if tables is None and "ops" in data:
            # A file with a bare `ops = [...]` is a single unnamed variant.
            tables, data = [data], {}
        if data:
            raise UsageError(f"{source}: unknown top-level key(s) {', '.join(sorted(data))}"
                             f"{did_you_mean(sorted(data)[0], ('defaults', 'variant'))}; "
                             "expected [defaults] and [[variant]] tables")
        if not isinstance(tables, list) or not tables:
            raise UsageError(f"{source}: no variants; add a [[variant]] table with ops = [...]")
        variants = []
        for index, table in enumerate(tables, 1):
            merged = {**defaults, **table}
            where = f"{source}: variant {merged.get('name') or index}"
            keys = ("name", "ops", "format", "quality", "template", "background")
            unknown = sorted(set(merged) - set(keys))
            if unknown:
                raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown[0], keys)}; "
                                 f"a variant takes {', '.join(keys)}")
            raw_ops = merged.get("ops", [])
            if not isinstance(raw_ops, list) or not all(isinstance(t, dict) for t in raw_ops):
                raise UsageError(f"{where}: ops must be a list of tables like [{{ op = \"thumbnail\", size = 256 }}]")
            if base_dir is not None:
                raw_ops = [_resolve_paths(t, base_dir) for t in raw_ops]
            try:
                ops = tuple(op_from_dict(t) for t in raw_ops)
                variants.append(Variant(ops, name=merged.get("name"), format=merged.get("format"),
                                        quality=merged.get("quality", DEFAULT_QUALITY),
                                        template=merged.get("template"),
                                        background=merged.get("background", (255, 255, 255, 255))))
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
        return cls(tuple(variants))

    @classmethod
    def from_toml(cls, path: str | Path) -> "Spec":
        path = Path(path)
        import tomllib                                   # 4 ms of every start, for spec files alone
        data = read_resource(path, "spec file")          # a regular file, never a FIFO that blocks
        try:
            parsed = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"spec file {printable(str(path))} is not UTF-8 text: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"spec file {printable(str(path))} is not valid TOML: {exc}") from None
        return cls.from_dict(parsed, source=printable(str(path)), base_dir=path.parent)

    # ----------------------------------------------------------------- queries

    def check_resources(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        """Fail up front (UsageError) on a watermark image or font that can't be read, rather than
        once per input halfway through a run: each must be a regular file (a FIFO would block), and
        an image declaring more than ``max_pixels`` is refused from its header, before it is loaded."""
        for variant in self.variants:
            for op in variant.ops:
                if isinstance(op, Watermark) and op.image is not None:
                    check_watermark_image(op.image, max_pixels)
                if isinstance(op, Watermark) and op.font is not None:
                    check_watermark_font(op.font)
                if isinstance(op, Python):
                    from .userops import load_function
                    load_function(op.function)          # importable and callable, or UsageError now

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [v.to_dict() for v in self.variants]}

    def hash(self) -> str:
        """Stable across runs and machines: the journal's 'did the spec change' test. It covers
        the bytes of every file the spec reads, so a watermark replaced at the same path counts."""
        files = self._file_digests()          # only when there are any: other specs' hashes stay as they were
        revised = {op.name: op.revision for variant in self.variants for op in variant.ops if op.revision > 1}
        canonical = json.dumps({**self.to_dict(), **({"files": files} if files else {}),
                                **({"revisions": revised} if revised else {})}, sort_keys=True,
                               separators=(",", ":"), ensure_ascii=True)
        return digests.sha256(canonical.encode()).hexdigest()[:16]

    def _file_digests(self) -> dict[str, str]:
        found = {path: _content_digest(path) for variant in self.variants for op in variant.ops
                 if isinstance(op, Watermark) for path in (op.image, op.font) if path is not None}
        functions = {op.function for variant in self.variants for op in variant.ops if isinstance(op, Python)}
        if functions:
            from .userops import source_digest
            found.update({function: source_digest(function) for function in sorted(functions)})
        return found

    def decode_hint(self, width: int, height: int) -> tuple[int, int] | None:
        """Smallest decode size that serves every variant (None: decode at full size)."""
        hints = []
        for variant in self.variants:
            first = variant.ops[0] if variant.ops else None
            hint = first.decode_hint(width, height) if isinstance(first, Resize) else None
            if hint is None:
                return None
            hints.append(hint)
        return max(h[0] for h in hints), max(h[1] for h in hints)

    @functools.cached_property
    def reads_measured_values(self) -> bool:
        """Every variant's first op that changes values reads them (window, normalize, equalize):
        a DICOM is then decoded to its measured values (codecs.decode(values=True)), not to the
        display window its file names."""
        def reads(ops: tuple) -> bool:
            first = next((op for op in ops if not op.keeps_units), None)
            return first is not None and first.reads_values
        return all(reads(variant.ops) for variant in self.variants)

    @functools.cached_property
    def raw_bits(self) -> int:
        """The depth camera RAW inputs are demosaiced to (asked for every input: worked out once)."""
        return self.output_bits("raw")

    def output_bits(self, input_format: str) -> int:
        """16 when every variant writes an input of this format to a format that holds 16 bits,
        else 8: the depth a format that decodes at either (camera RAW) is decoded to."""
        deep = all(codecs.formats.BY_NAME[v.output_format(input_format)].sixteen_bit for v in self.variants)
        return 16 if deep else 8

    def in_units(self, slope: float, intercept: float) -> "Spec":
        """This spec for images whose measured value is ``slope · pixel + intercept``: each window
        that still reads measured values (only ops that keep units before it) is moved onto the
        pixels (``Window.in_units``); later ops see display values and stay as they are."""
        variants = []
        for variant in self.variants:
            ops, measured = [], True
            for op in variant.ops:
                if measured and isinstance(op, Window):
                    ops.append(op.in_units(slope, intercept))
                else:
                    ops.append(op)
                measured = measured and op.keeps_units
            variants.append(dataclasses.replace(variant, ops=tuple(ops)))
        return Spec(tuple(variants))

    def describe(self) -> list[str]:
        lines = []
        for v in self.variants:
            chain = " → ".join(str(op) for op in v.ops) or "(no ops)"
            lines.append(f"{v.name or 'output'}: {chain} → {v.format or 'same format'}"
                         f"{'' if (v.format or '') == 'png' else f' q{v.quality}'} as {v.effective_template}")
        return lines


def _content_digest(path: str) -> str:
    """A file's bytes, hashed; a file that cannot be read as a regular file hashes as what went
    wrong (check_resources reports it), never blocking on a FIFO. Cached while the file is unchanged."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        return _regular_file_digest(path, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


@functools.lru_cache(maxsize=32)
def _regular_file_digest(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = digests.blake2b(digest_size=16)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):         # swapped since the stat
            return "not a regular file"
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve_paths(table: Any, base_dir: Path) -> Any:
    if not isinstance(table, dict):
        return table
    resolved = dict(table)
    for key in ("image", "font"):
        value = resolved.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (base_dir / value).exists():
            resolved[key] = str(base_dir / value)
    function = resolved.get("function")
    if resolved.get("op") == "python" and isinstance(function, str) and ".py:" in function:
        file, _, name = function.rpartition(":")          # a file beside the spec file
        if not Path(file).is_absolute() and (base_dir / file).is_file():
            resolved["function"] = f"{base_dir / file}:{name}"
    return resolved


def check_watermark_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """UsageError unless ``path`` is a regular file holding an image Pillow reads, of at most
    ``max_pixels`` pixels (checked from the header, so a bomb is never decoded)."""
    from PIL import Image

    data = read_resource(path, "watermark image")
    shown = printable(str(path))
    size = _declared_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise UsageError(f"watermark image {shown} is {size[0]}×{size[1]} = {size[0] * size[1]:,} pixels, above "
                         f"the limit of {max_pixels:,} (--max-pixels); use a smaller image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UsageError(f"watermark image {shown} cannot be read: {exc}") from None


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header of a format gpupipe reads (Pillow's own bomb check, which
    warns or raises at its fixed limit, never runs first); None for other formats, left to Pillow."""
    from .errors import InputError

    try:
        info = codecs.probe(data, max_pixels=None)
    except InputError:
        return None
    return info.width, info.height


def check_watermark_font(path: str) -> None:
    """UsageError unless ``path`` is a regular file holding a font FreeType loads."""
    from PIL import ImageFont

    data = read_resource(path, "watermark font")
    try:
        ImageFont.truetype(io.BytesIO(data), 12)
    except (OSError, ValueError) as exc:
        raise UsageError(f"watermark font {printable(str(path))} cannot be loaded: {exc}") from None


@dataclass
class OpTrie:
    """Variants' op chains merged by common prefix so shared work runs once per image."""

    op: Op | None = None
    children: list["OpTrie"] = field(default_factory=list)
    variant_indices: list[int] = field(default_factory=list)   # variants that end at this node

    @classmethod
    def build(cls, variants: Sequence[Variant]) -> "OpTrie":
        root = cls()
        for index, variant in enumerate(variants):
            node = root
            for op in variant.ops:
                child = next((c for c in node.children if c.op == op), None)
                if child is None:
                    child = cls(op)
                    node.children.append(child)
                node = child
            node.variant_indices.append(index)
        return root
