"""Reference tables for the docs, generated from the code that defines what they describe: the
ops (``gpupipe.ops``) and the classes of per-input failure (``gpupipe.errors``). The README and
docs/usage.md hold their output between markers; a test checks they are current, so a new op,
parameter or error class cannot go undocumented."""

from __future__ import annotations

from . import errors, ops


def ops_table() -> str:
    """Markdown: every op, its command-line flag, its parameters with their defaults, and what it does."""
    from .cli.opflags import synopsis
    rows = ["| op | command line | parameters (spec files, `gpupipe.ops`) | what it does |", "|---|---|---|---|"]
    for name, cls in ops.OP_CLASSES.items():
        params = ", ".join(_param(info) for info in cls.params()) or "—"
        rows.append(f"| `{name}` | `{_cell(synopsis(cls))}` | {params} | {_cell(cls.summary)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _param(info: ops.ParamInfo) -> str:
    default = info.shown_default()
    choices = f" ({_cell(' | '.join(map(str, info.spec.choices)))})" if info.spec.choices else ""
    return f"`{info.name}`" + (f" = {default}" if default else "") + choices


def options_table() -> str:
    """Markdown: every run option — its keyword in gpupipe.run, its flag, its environment variable,
    its default and what it does — as gpupipe.options defines it."""
    from . import options
    rows = ["| option | `gpupipe run` flag | environment | default | what it does |", "|---|---|---|---|---|"]
    for name, option in options.registry().items():
        keyword = f"`{name}`" if option.api else "(CLI only)"
        flags = ", ".join(f"`{flag}`" for flag in option.flags) or "(API only)"
        default = option.shown_default if option.shown_default is not None else (
            "—" if option.default is None else str(option.default).lower() if isinstance(option.default, bool)
            else str(option.default))
        rows.append(f"| {keyword} | {flags} | {f'`{option.env}`' if option.env else '—'} | {_cell(default)} | "
                    f"{_cell(option.help)} |")
    return "\n".join(rows)


def formats_table() -> str:
    """Markdown: every image format, as gpupipe.codecs.formats defines it."""
    from .codecs import formats
    yes = {True: "yes", False: "—"}
    rows = ["| format | extensions | read | write | alpha | 16 bits kept | largest side written |",
            "|---|---|---|---|---|---|---|"]
    for f in formats.FORMATS:
        where = f" (where Pillow has {f.pillow_feature.upper()})" if f.pillow_feature else ""
        read = yes[f.read] + (f" (with `gpupipe[{f.extra}]`)" if f.extra else where if f.read else "")
        write = yes[f.write] + (where if f.write else "")
        largest = "—" if not f.write else "no limit" if f.max_side is None else f"{f.max_side:,}".replace(",", " ")
        rows.append(f"| `{f.name}` | {', '.join('.' + e for e in f.extensions)} | {read} | {write} | "
                    f"{yes[f.alpha]} | {yes[f.sixteen_bit]} | {largest} |")
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
        if "error_class" in vars(cls) and cls is not errors.Rejected:     # a verdict, not a failure
            found.append(cls)
        found.extend(_input_errors(cls))
    return found


def between_markers(text: str, name: str) -> str:
    """The part of ``text`` between ``<!-- NAME: ... -->`` and ``<!-- end of NAME -->``."""
    start = text.index(f"<!-- {name}:")
    start = text.index("-->", start) + 3
    return text[start:text.index(f"<!-- end of {name} -->")].strip()
