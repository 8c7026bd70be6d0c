"""Reference tables for the docs, generated from the code that defines what they describe: the
ops (``gpupipe.ops``) and the classes of per-input failure (``gpupipe.errors``). The README and
docs/usage.md hold their output between markers; a test checks they are current, so a new op,
parameter or error class cannot go undocumented."""

from __future__ import annotations

import dataclasses

from . import errors, ops


def ops_table() -> str:
    """Markdown: every op, its parameters with their defaults, and what it does."""
    rows = ["| op | parameters (spec files, `gpupipe.ops`) | what it does |", "|---|---|---|"]
    for name, cls in ops.OP_CLASSES.items():
        if cls is ops.Thumbnail:
            params = "size, or width and height"
        else:
            params = ", ".join(_param(field) for field in dataclasses.fields(cls)) or "—"
        rows.append(f"| `{name}` | {params} | {_cell(cls.summary)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _param(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:     # type: ignore[misc]
        default = field.default_factory()                         # type: ignore[misc]
    else:
        return f"`{field.name}`"
    if isinstance(default, tuple) and len(default) == 4 and all(isinstance(v, int) for v in default):
        default = "#{:02x}{:02x}{:02x}{:02x}".format(*default)   # a colour
    return f"`{field.name}`" if default is None else f"`{field.name}` = {default!r}".replace("'", "")


def formats_table() -> str:
    """Markdown: every image format, as gpupipe.codecs.formats defines it."""
    from .codecs import formats
    yes = {True: "yes", False: "—"}
    rows = ["| format | extensions | read | write | alpha | 16-bit |", "|---|---|---|---|---|---|"]
    for f in formats.FORMATS:
        write = yes[f.write] + (f" (where Pillow has {f.pillow_feature.upper()})" if f.write and f.pillow_feature else "")
        rows.append(f"| `{f.name}` | {', '.join('.' + e for e in f.extensions)} | {yes[f.read]} | {write} | "
                    f"{yes[f.alpha]} | {'yes (gpupipe uses 8 bits today)' if f.sixteen_bit else '—'} |")
    return "\n".join(rows)


def error_classes_table() -> str:
    """Markdown: every class of per-input failure, as reports, the journal and metrics name it."""
    rows = ["| error class | what happened |", "|---|---|"]
    for cls in _input_errors(errors.InputError):
        rows.append(f"| `{cls.error_class}` | {_cell((cls.__doc__ or '').strip())} |")
    return "\n".join(rows)


def _input_errors(base: type) -> list[type]:
    found = []
    for cls in base.__subclasses__():
        if "error_class" in vars(cls):
            found.append(cls)
        found.extend(_input_errors(cls))
    return found


def between_markers(text: str, name: str) -> str:
    """The part of ``text`` between ``<!-- NAME: ... -->`` and ``<!-- end of NAME -->``."""
    start = text.index(f"<!-- {name}:")
    start = text.index("-->", start) + 3
    return text[start:text.index(f"<!-- end of {name} -->")].strip()
