"""``dataclass``: the standard library's, with its ``__eq__``, ``__hash__`` and ``__repr__`` shared.

``dataclasses.dataclass`` writes the source of each method it adds and compiles it, class by
class: 0.7 ms for a frozen class here, and gpupipe makes 65 of them at import, before a run
can fork its workers (a third of gpupipe's own import time, docs/benchmarks.md). The
comparison, hash and repr are the same for every class once they know its fields, so they are
written once, below, and each class gets them with its field names; the library still makes
the fields, the ``__init__`` (which runs for every input, and is fastest as generated code)
and a frozen class's ``__setattr__``. Everything else about a dataclass is unchanged:
``dataclasses.fields``, ``replace``, ``asdict``, pickling, ``__match_args__``, and a method the
class writes itself is kept, as ``dataclasses`` keeps it.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Callable, TypeVar, dataclass_transform, overload

T = TypeVar("T", bound=type)


@overload
def dataclass(cls: T, /, *, frozen: bool = False) -> T: ...
@overload
def dataclass(cls: None = None, /, *, frozen: bool = False) -> Callable[[T], T]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def dataclass(cls: Any = None, /, *, frozen: bool = False) -> Any:
    """``@dataclass`` or ``@dataclass(frozen=True)``, as the standard library's."""
    if cls is None:
        return lambda cls: _make(cls, frozen)
    return _make(cls, frozen)


def _make(cls: T, frozen: bool) -> T:
    # Told eq=False and repr=False, the library adds none of the three methods, so the class's own
    # dictionary still says which of them the class wrote itself; read before any is set below.
    cls = dataclasses.dataclass(cls, frozen=frozen, eq=False, repr=False)
    own = cls.__dict__
    writes_repr, writes_eq = "__repr__" in own, "__eq__" in own
    # The library's rule: a class that defines __hash__ itself keeps it (but not the None that
    # defining __eq__ leaves); otherwise a frozen class hashes its fields and a mutable one is unhashable.
    writes_hash = "__hash__" in own and not (own["__hash__"] is None and writes_eq)
    fields = dataclasses.fields(cls)
    cls._shown_fields = tuple(f.name for f in fields if f.repr)
    cls._compared_fields = tuple(f.name for f in fields if f.compare)
    if not writes_repr:
        cls.__repr__ = _repr
    if not writes_eq:
        cls.__eq__ = _eq
    if not writes_hash:
        if frozen:
            cls._hashed_fields = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
            cls.__hash__ = _hash
        else:
            cls.__hash__ = None
    return cls


@reprlib.recursive_repr()
def _repr(self) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown_fields)
    return f"{type(self).__qualname__}({shown})"


def _eq(self, other: object) -> bool:
    if other.__class__ is self.__class__:
        names = self._compared_fields
        return tuple([getattr(self, n) for n in names]) == tuple([getattr(other, n) for n in names])
    return NotImplemented


def _hash(self) -> int:
    return hash(tuple([getattr(self, name) for name in self._hashed_fields]))
