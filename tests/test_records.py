"""gpupipe.records.dataclass behaves as the standard library's: the same comparisons, hashes,
reprs and errors, for each kind of class gpupipe declares with it."""

import dataclasses
import pickle

import pytest

from gpupipe import records
from gpupipe.ops import Flip, Resize, Thumbnail


def declare(decorator, frozen):
    """The same classes, declared with ``decorator``: a base, a subclass, fields left out of the
    repr and the comparison, a default factory, a class writing its own repr."""

    @decorator(frozen=frozen)
    class Base:
        name: str
        size: int = 3

    @decorator(frozen=frozen)
    class Child(Base):
        tags: tuple = ()
        note: str = dataclasses.field(default="", repr=False, compare=False)
        items: list = dataclasses.field(default_factory=list, hash=False, compare=False)

    @decorator(frozen=frozen)
    class Own:
        value: int = 0

        def __repr__(self) -> str:
            return "own"

    return Base, Child, Own


@pytest.mark.parametrize("frozen", [True, False])
def test_the_same_methods_as_the_standard_librarys(frozen):
    ours, theirs = declare(records.dataclass, frozen), declare(dataclasses.dataclass, frozen)
    for our_class, their_class in zip(ours, theirs):
        assert [f.name for f in dataclasses.fields(our_class)] == [f.name for f in dataclasses.fields(their_class)]
        assert (our_class.__hash__ is None) == (their_class.__hash__ is None) == (not frozen)
    base, child, own = ours
    std_base, std_child, std_own = theirs
    cases = [(child("a", 4, ("x",), note="n", items=[1]), std_child("a", 4, ("x",), note="n", items=[1])),
             (base("b"), std_base("b")), (own(2), std_own(2))]
    for ours_made, theirs_made in cases:
        assert repr(ours_made).replace(".<locals>.", "") == repr(theirs_made).replace(".<locals>.", "")
        assert dataclasses.asdict(ours_made) == dataclasses.asdict(theirs_made)
    first, same_but_note, other = child("a", note="1"), child("a", note="2"), child("a", size=5)
    assert first == same_but_note and first != other and not (first != same_but_note)
    assert base("a") != child("a")                 # another class never compares equal (NotImplemented)
    assert (base("a") == "a") is False
    if frozen:
        assert hash(first) == hash(same_but_note) == hash(std_child("a", note="x"))
        assert hash(base("b", 2)) == hash(("b", 2))
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.size = 9
    else:
        with pytest.raises(TypeError, match="unhashable"):
            hash(first)
        first.size = 9
        assert first == other.__class__("a", size=9)


def test_a_class_keeps_what_it_writes_itself():
    @records.dataclass(frozen=True)
    class Custom:
        value: int

        def __eq__(self, other):
            return True

        def __hash__(self):
            return 7

    assert Custom(1) == Custom(2) and hash(Custom(1)) == 7

    @records.dataclass(frozen=True)
    class Unhashable:                    # an explicit None is the class's own word, as the library reads it
        value: int
        __hash__ = None

    assert Unhashable.__hash__ is None
    assert repr(Custom(1)) == "test_a_class_keeps_what_it_writes_itself.<locals>.Custom(value=1)"


def test_a_repr_that_contains_itself_says_so():
    @records.dataclass
    class Node:
        children: list

    node = Node([])
    node.children.append(node)
    assert repr(node).endswith("Node(children=[...])")


def test_ops_as_every_front_end_uses_them():
    """Ops compare, hash, print, pickle and round-trip as they did as standard dataclasses."""
    resize = Resize(800, 600)
    assert resize == Resize(width=800, height=600) and resize != Thumbnail(800, 600)
    assert len({resize, Resize(800, 600), Flip("horizontal")}) == 2
    assert repr(Flip("vertical")) == "Flip(direction='vertical')"
    assert pickle.loads(pickle.dumps(resize)) == resize
    assert dataclasses.replace(resize, mode="fill") == Resize(800, 600, mode="fill")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resize.width = 1


def test_every_class_says_what_it_is():
    """Each of gpupipe's dataclasses has a docstring of its own (an op: its summary): help() has
    something to say, and the library does not work one out from the signature at import."""
    import importlib
    import pkgutil

    import gpupipe
    undocumented = []
    for module_info in pkgutil.walk_packages(gpupipe.__path__, "gpupipe."):
        try:
            module = importlib.import_module(module_info.name)
        except ImportError:                  # an optional extra that is not installed (CuPy, Ray …)
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__
                    and (value.__doc__ or "").startswith(f"{value.__name__}(")):
                undocumented.append(f"{module.__name__}.{value.__name__}")
    assert not undocumented
