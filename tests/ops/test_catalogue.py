"""The op catalogue: parameters and their rules, output sizes, plans, round trips, messages."""

from __future__ import annotations

import pickle

import pytest

from gpupipe import ops
from gpupipe.errors import ProcessingError, UsageError


def test_thumbnail_keeps_aspect_and_never_upscales() -> None:
    assert ops.Thumbnail(50).output_size(200, 100) == (50, 25)
    assert ops.Thumbnail(256).output_size(100, 80) == (100, 80)
    assert ops.Thumbnail(128, 64).output_size(1000, 1000) == (64, 64)


@pytest.mark.parametrize("mode,expected", [("exact", (300, 300)), ("fit", (300, 200)), ("fill", (300, 300)),
                                           ("cover", (300, 300)), ("pad", (300, 300))])
def test_resize_modes_output_sizes(mode: str, expected: tuple[int, int]) -> None:
    assert ops.Resize(300, 300, mode=mode).output_size(1800, 1200) == expected


def test_a_resize_asked_again_plans_each_size_as_its_own() -> None:
    """Resize keeps its last plan (an input's is asked for three times): never for another size,
    and never as part of what the op is."""
    op = ops.Resize(300, 300, mode="fill")
    for width, height in [(1800, 1200), (1800, 1200), (1200, 1800), (1800, 1200), (300, 300)]:
        assert op.plan(width, height) == ops.Resize(300, 300, mode="fill").plan(width, height)
    assert op == ops.Resize(300, 300, mode="fill") and hash(op) == hash(ops.Resize(300, 300, mode="fill"))
    assert op.to_dict() == ops.Resize(300, 300, mode="fill").to_dict() and "_last_plan" not in repr(op)


def test_resize_plans() -> None:
    assert ops.Resize(300, 300, mode="fill").plan(1800, 1200) == ops.ResizePlan(450, 300, crop=(75, 0, 300, 300))
    assert ops.Resize(300, 300, mode="pad").plan(1800, 1200) == ops.ResizePlan(300, 200, pad=(300, 300, 0, 50))
    assert ops.Resize(width=900).output_size(1800, 1200) == (900, 600)
    assert ops.Resize(height=100, mode="fit").output_size(1800, 1200) == (150, 100)
    assert ops.Resize(4000, 4000, mode="fit", upscale=False).output_size(1800, 1200) == (1800, 1200)
    assert ops.Resize(1, 1000, mode="fit").output_size(5000, 3) == (1, 1)        # never 0 pixels


def test_rotate_swaps_and_crop_outside_fails_per_image() -> None:
    assert ops.Rotate(90).output_size(200, 100) == (100, 200)
    assert ops.Rotate(180).output_size(200, 100) == (200, 100)
    with pytest.raises(ProcessingError, match="outside"):
        ops.Crop(150, 0, 100, 10).output_size(200, 100)


def test_decode_hint_asks_for_twice_the_target() -> None:
    assert ops.Thumbnail(256).decode_hint(4000, 3000) == (512, 384)
    assert ops.Resize(3000, 3000, mode="fit").decode_hint(4000, 3000) is None   # no shrink worth doing
    assert ops.Resize(256, 256, filter="nearest").decode_hint(4000, 3000) is None


@pytest.mark.parametrize("bad", [
    lambda: ops.Rotate(45), lambda: ops.Resize(0, 10), lambda: ops.Resize(10, 10, mode="zoom"),
    lambda: ops.Resize(10, 10, filter="cubic"), lambda: ops.GaussianBlur(0), lambda: ops.Brightness(300),
    lambda: ops.Contrast(-1), lambda: ops.Convolve(((1, 2), (3, 4))), lambda: ops.Watermark(),
    lambda: ops.Watermark(text="x", position="middle"), lambda: ops.Watermark(text="x", opacity=2),
    lambda: ops.Flip("diagonal"), lambda: ops.BoxBlur(0),
])
def test_bad_parameters_are_usage_errors(bad) -> None:
    with pytest.raises(UsageError):
        bad()


def test_ops_round_trip_through_dicts_and_pickle() -> None:
    chain = [ops.Thumbnail(256), ops.Resize(800, 600, mode="cover"), ops.Crop(1, 2, 3, 4), ops.Flip("h"),
             ops.Convolve(((0, 1, 0), (1, 1, 1), (0, 1, 0)), divisor=5), ops.Watermark(text="©", color="#ff000080")]
    for op in chain:
        assert ops.op_from_dict(op.to_dict()) == op
        assert pickle.loads(pickle.dumps(op)) == op
    assert ops.Resize(1, 1, mode="cover").mode == "fill"
    assert ops.Watermark(text="x", color="#ff000080").color == (255, 0, 0, 128)


def test_op_from_dict_names_the_problem() -> None:
    with pytest.raises(UsageError, match="unknown op 'blurr'"):
        ops.op_from_dict({"op": "blurr"})
    with pytest.raises(UsageError, match="no parameter 'radius'.*sigma"):
        ops.op_from_dict({"op": "blur", "radius": 3})


def test_a_far_miss_suggests_nothing() -> None:
    with pytest.raises(UsageError) as caught:
        ops.Resize(10, 10, mode="banana")
    assert "did you mean" not in str(caught.value)


def _outside(info: ops.ParamInfo) -> list[object]:
    """Values a parameter's rules refuse."""
    spec, bad = info.spec, []
    if spec.choices:
        bad.append("nonesuch" if info.kind is str else 45)
    if spec.least is not None:
        bad.append(spec.least - 1)
    if spec.above is not None:
        bad.append(spec.above)
    if spec.most is not None:
        bad.append(spec.most + 1)
    if info.kind in (int, float) and spec.convert is None:
        bad.append("text")
    if info.kind is int and spec.convert is None:
        bad.append(1.5)
    return bad


VALID = {"watermark": {"text": "x"}, "resize": {"width": 10, "height": 10}, "python": {"function": "m:f"}}


@pytest.mark.parametrize("cls", [c for c in ops.OP_CLASSES.values() if c is not ops.Thumbnail], ids=lambda c: c.name)
def test_every_parameter_rule_of_the_registry_is_enforced(cls: type[ops.Op]) -> None:
    """Generated from the registry: each value a parameter's declared rules refuse is a UsageError
    naming the op and the parameter, and each declared default is accepted."""
    base = VALID.get(cls.name, {})
    assert cls(**base) is not None                                   # the defaults pass their own rules
    for info in cls.params():
        assert info.doc and "\n" not in info.doc and not info.doc.endswith("."), \
            f"{cls.name}.{info.name} needs a one-line doc (a phrase: the docs and --help end it)"
        for value in _outside(info):
            with pytest.raises(UsageError, match=rf"^{cls.name} {info.name} must be"):
                cls(**{**base, info.name: value})


def test_a_parameter_must_be_declared_with_its_rules() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Undeclared(ops.Op):
        name = "undeclared"
        summary = "a parameter without param(...)"
        strength: float = 1.0

    @dataclass(frozen=True)
    class Declared(ops.Op):              # its annotations are strings here (this module's future import)
        name = "declared"
        summary = "a parameter with param(...)"
        strength: float | None = ops.param(None, "how strong", least=0)

    assert Declared.params()[0].kind is float and Declared.params()[0].optional
    with pytest.raises(UsageError, match="declared strength must be ≥ 0"):
        Declared(-1)

    with pytest.raises(TypeError, match=r"Undeclared.strength is not declared with param"):
        Undeclared()
