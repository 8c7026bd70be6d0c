"""The op flags of `gpupipe run`, generated from the op registry (gpupipe/ops.py).

Each op's ``cli`` entry becomes its flag (``--blur SIGMA``, a bare ``--grayscale``); each of its
other parameters becomes a modifier flag (``--sharpen-amount``, ``--watermark-opacity``) that sets
that parameter on every such op of the command. Ops apply in the order their flags are given:
click does not keep the relative order of different options, so ``ops_from_args`` reads the raw
arguments (kept by the run command) in order, with the parsed values of the modifiers.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any, Optional

import typer

from .. import ops as catalogue
from ..errors import UsageError
from ..records import dataclass
from .app import escape

OPS_PANEL = "Ops (applied in the order given)"
UNSET = object()


@dataclass(frozen=True)
class OpFlag:
    """A flag that adds an op: ``flag`` reads its value into ``flag_spec.sets``."""

    name: str
    op: type[catalogue.Op]
    spec: catalogue.Flag

    @property
    def takes_value(self) -> bool:
        return bool(self.spec.sets)


@dataclass(frozen=True)
class Modifier:
    """A flag that sets one parameter of the ops an op flag adds. ``value`` is what a bare
    modifier sets (``--fill``: mode fill, ``--no-upscale``: upscale false); UNSET when it takes a value.
    A ``shared`` one reads a run-wide flag of the same name (``--background``) and adds no flag."""

    name: str
    op: type[catalogue.Op]
    param: catalogue.ParamInfo
    targets: tuple[str, ...]           # the op flags it modifies
    value: Any = UNSET
    shared: bool = False

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@cache
def op_flags() -> dict[str, OpFlag]:
    return {spec.name: OpFlag(spec.name, cls, spec) for cls in catalogue.OP_CLASSES.values() for spec in cls.cli}


@cache
def modifiers() -> tuple[Modifier, ...]:
    found: list[Modifier] = []
    for cls in catalogue.OP_CLASSES.values():
        if not cls.cli:
            continue
        targets = tuple(spec.name for spec in cls.cli)
        first = cls.cli[0]
        prefix = first.prefix or cls.name.replace("_", "-")
        spelled = dict(first.modifiers)
        set_by_value = {name for spec in cls.cli for name in spec.sets}
        for info in cls.params():
            if info.name in set_by_value:
                continue
            spelling = spelled.get(info.name, f"--{prefix}-{info.name.replace('_', '-')}")
            if spelling == "choices":
                found.extend(Modifier(f"--{choice}", cls, info, targets, value=choice) for choice in info.spec.choices)
            elif spelling == "no":
                found.append(Modifier(f"--no-{info.name}", cls, info, targets, value=False))
            elif spelling.startswith("shared:"):
                found.append(Modifier(spelling.removeprefix("shared:"), cls, info, targets, shared=True))
            else:
                found.append(Modifier(spelling, cls, info, targets))
    return tuple(found)


def typer_parameters() -> list[inspect.Parameter]:
    """The run command's op flags, each followed by its modifiers, as typer reads a function's parameters."""
    params = []
    for cls in catalogue.OP_CLASSES.values():
        panel = next((spec.panel for spec in cls.cli if spec.panel), OPS_PANEL)
        for flag in (op_flags()[spec.name] for spec in cls.cli):
            help_text = escape(flag.spec.help or flag.op.summary)
            if flag.takes_value:
                option = typer.Option(None, flag.name, metavar=flag.spec.metavar, help=help_text,
                                      rich_help_panel=panel, show_default=False)
                params.append(_parameter(flag.name, Optional[list[str]], option))
            else:
                params.append(_parameter(flag.name, bool, typer.Option(False, flag.name, help=help_text,
                                                                       rich_help_panel=panel)))
        params.extend(_parameter(modifier.name, *_modifier_option(modifier, panel))
                      for modifier in modifiers() if modifier.op is cls and not modifier.shared)
    return params


def _modifier_option(modifier: Modifier, panel: str) -> tuple[Any, Any]:
    info, targets = modifier.param, " or ".join(modifier.targets)
    if modifier.value is not UNSET:
        if info.spec.choices:
            what = f"{targets} {info.name} {modifier.value}: {dict(info.spec.choice_docs).get(modifier.value, '')}"
        else:
            what = f"Sets {info.name} {str(modifier.value).lower()} for {targets}: {info.doc}"
        return bool, typer.Option(False, modifier.name, help=escape(what.rstrip(": ") + "."), rich_help_panel=panel)
    kind = info.kind if info.kind in (int, float) else str
    rule = info.spec.rule()
    default = info.shown_default()
    help_text = (escape(f"{info.doc[0].upper()}{info.doc[1:]} ({targets}{'; ' + rule if rule else ''}).")
                 + (f" \\[default: {default}]" if default else ""))
    return Optional[kind], typer.Option(None, modifier.name, help=help_text, rich_help_panel=panel,
                                        show_default=False)


def _parameter(flag: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(flag.lstrip("-").replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def check_modifiers(given: set[str]) -> None:
    """UsageError for a modifier given without an op flag it modifies (``--thumbnail 100 --filter
    bilinear``: --filter is --resize's), and for two bare modifiers setting one parameter two ways."""
    chosen: dict[tuple[type, str], list[str]] = {}
    for modifier in modifiers():
        if modifier.shared or modifier.name not in given:
            continue
        if not given & set(modifier.targets):
            raise UsageError(f"{modifier.name} modifies {' or '.join(modifier.targets)}, which this command does "
                             f"not have; add {modifier.targets[0]}, or drop {modifier.name}")
        if modifier.value is not UNSET:
            chosen.setdefault((modifier.op, modifier.param.name), []).append(modifier.name)
    for (cls, name), flags in chosen.items():
        if len(flags) > 1:
            raise UsageError(f"{' and '.join(flags)} are different {cls.name} {name}s; give one")


def ops_from_args(raw: list[str], values: dict[str, Any], takes_value: set[str]) -> list[catalogue.Op]:
    """Op flags in command-line order → ops. ``values``: click's parsed values (for the modifiers);
    ``takes_value``: every option of the command that takes a value (to step over it)."""
    arguments = raw[:raw.index("--")] if "--" in raw else raw
    check_modifiers({token.partition("=")[0] for token in arguments})
    flags = op_flags()
    result = []
    i = 0
    while i < len(arguments):
        name, has_inline, inline = arguments[i].partition("=")
        value = inline if has_inline else None
        if name in takes_value and not has_inline:
            value = arguments[i + 1] if i + 1 < len(arguments) else None
            i += 1
        i += 1
        if name in flags:
            result.append(_build(flags[name], value, values))
    return result


def _build(flag: OpFlag, text: str | None, values: dict[str, Any]) -> catalogue.Op:
    params: dict[str, Any] = {}
    for modifier in modifiers():
        if modifier.op is not flag.op:
            continue
        given = values.get(modifier.dest)
        if modifier.shared or (modifier.value is UNSET and given is not None):
            params[modifier.param.name] = given
        elif modifier.value is not UNSET and given:
            params[modifier.param.name] = modifier.value
    if flag.takes_value:
        if text is None:
            raise UsageError(f"{flag.name} needs a value")
        parsed = _parse_value(flag, text)
        if isinstance(parsed, catalogue.Op):
            return parsed
        params.update(parsed)
    return flag.op(**params)


def _parse_value(flag: OpFlag, text: str) -> dict[str, Any] | catalogue.Op:
    if flag.spec.syntax is not None:
        return flag.spec.syntax(text, flag.name)
    (name,) = flag.spec.sets              # one parameter: the text in that parameter's type
    info = next(p for p in flag.op.params() if p.name == name)
    if info.kind in (int, float) and info.spec.convert is None:
        try:
            return {name: info.kind(text)}
        except ValueError:
            raise UsageError(f"{flag.name} takes a {'whole ' if info.kind is int else ''}number, got {text!r}") \
                from None
    return {name: text}


def synopsis(cls: type[catalogue.Op]) -> str:
    """How an op is written on the command line: its flag(s), then its modifiers."""
    if not cls.cli:
        return "(spec files only)"
    flags = " | ".join(f"{spec.name} {spec.metavar}" if spec.sets else spec.name for spec in cls.cli)
    mods: list[str] = []
    for modifier in modifiers():
        if modifier.op is not cls:
            continue
        if modifier.value is not UNSET and modifier.param.spec.choices:
            choice_flags = [m.name for m in modifiers() if m.op is cls and m.param.name == modifier.param.name]
            entry = f"[{'|'.join(choice_flags)}]"
        elif modifier.value is not UNSET:
            entry = f"[{modifier.name}]"
        else:
            entry = f"[{modifier.name} {modifier.param.name.upper()}]"
        if entry not in mods:
            mods.append(entry)
    return " ".join([flags, *mods])
