"""The op flags are generated from the op registry: every op has one, every parameter of every
op can be set from the command line, and a flag gives the very op the API and spec files give."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import gpupipe
from gpupipe import ops
from gpupipe.cli.opflags import modifiers, op_flags

from tests.support.cli import example_photos, gp


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return example_photos(tmp_path / "in", {"a.jpg": "Landscape_1.jpg", "c.png": "chapel.png"})


def outputs(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and ".gpupipe" not in p.parts}


def test_every_op_and_every_parameter_can_be_reached_from_the_command_line() -> None:
    help_text = gp("run", "--help").output
    for cls in ops.OP_CLASSES.values():
        assert cls.cli, f"{cls.name} has no command-line flag"
        reachable = {name for spec in cls.cli for name in spec.sets}
        reachable |= {m.param.name for m in modifiers() if m.op is cls}
        assert reachable == {p.name for p in cls.params()}, cls.name
        for spec in cls.cli:
            assert spec.name in help_text
    for modifier in modifiers():
        assert modifier.name in help_text


@pytest.mark.parametrize("flags, op", [
    (["--unsharp", "2", "--unsharp-amount", "1.5", "--unsharp-threshold", "3"], ops.Unsharp(2.0, 1.5, 3.0)),
    (["--convolve", "1 2 1; 2 4 2; 1 2 1", "--convolve-divisor", "20", "--convolve-offset", "4"],
     ops.Convolve(((1, 2, 1), (2, 4, 2), (1, 2, 1)), divisor=20, offset=4)),
    (["--center-crop", "120x90"], ops.CenterCrop(120, 90)),
    (["--crop", "120x90"], ops.CenterCrop(120, 90)),
    (["--resize", "200x200", "--pad", "--filter", "bilinear", "--background", "#102030"],
     ops.Resize(200, 200, mode="pad", filter="bilinear", background="#102030")),
    (["--edges", "--edges-kind", "laplacian"], ops.Edges("laplacian")),
    (["--window", "110,90", "--window-bits", "16"], ops.Window(110, 90, bits=16)),
    (["--normalize", "--normalize-low", "5", "--normalize-high", "90"], ops.Normalize(5, 90)),
    (["--equalize"], ops.Equalize()),
    (["--clahe", "0.02", "--equalize-tiles", "4"], ops.Equalize(clahe=True, clip_limit=0.02, tiles=4)),
    (["--watermark-text", "gp", "--watermark-position", "top-left", "--watermark-size", "20",
      "--watermark-color", "#ff000080"], ops.Watermark(text="gp", position="top-left", size=20, color="#ff000080")),
])
def test_a_flag_gives_the_op_the_api_gives(photos: Path, tmp_path: Path, flags: list[str], op: ops.Op) -> None:
    """Byte for byte: the flags and the API build the same op, so they write the same files."""
    by_flags = gp("run", photos, "-o", tmp_path / "cli", "--backend", "cpu", "-f", "png", *flags)
    assert by_flags.exit_code == 0, by_flags.output
    background = "#102030" if "--background" in flags else "#ffffff"
    spec = gpupipe.Spec.single([op], format="png", background=background)
    assert gpupipe.run(photos, tmp_path / "api", spec, backend="cpu").exit_code == 0
    assert outputs(tmp_path / "cli") == outputs(tmp_path / "api") != {}


def test_an_image_watermark_scales_from_the_command_line(photos: Path, tmp_path: Path) -> None:
    Image.new("RGBA", (400, 100), (255, 0, 0, 200)).save(tmp_path / "logo.png")
    done = gp("run", photos / "a.jpg", "-o", tmp_path / "out", "--backend", "cpu", "-f", "png",
              "--watermark-image", tmp_path / "logo.png", "--watermark-scale", "0.25", "--watermark-opacity", "1",
              "--watermark-position", "top-left", "--watermark-margin", "0")
    assert done.exit_code == 0, done.output
    with Image.open(tmp_path / "out" / "a.png") as im:
        width = im.width
        red = [x for x in range(width) if im.getpixel((x, 2))[:3] == (255, 0, 0) or
               (im.getpixel((x, 2))[0] > 200 and im.getpixel((x, 2))[1] < 60)]
    assert red and max(red) + 1 == round(width * 0.25)          # a quarter of the width, at the left


@pytest.mark.parametrize("flags, message", [
    (["--unsharp", "x"], "--unsharp takes a number, got 'x'"),
    (["--convolve", "1 2; 3 4"], "convolve kernel must be square with an odd size"),
    (["--unsharp-amount", "2", "--blur", "1"], "--unsharp-amount modifies --unsharp"),
    (["--center-crop", "10x10+1+1"], "--center-crop takes WxH"),
    (["--rotate", "45"], "rotate degrees must be one of 90, 180, 270"),
    (["--edges", "--edges-kind", "sobell"], "did you mean 'sobel'?"),
    (["--resize", "800x", "--fill"], "resize mode fill needs both a width and a height"),
    (["--watermark-text", "x", "--watermark-opacity", "2"], "watermark opacity must be within 0…1"),
])
def test_bad_op_flags_are_one_clear_usage_error(photos: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    done = gp("run", photos, "-o", tmp_path / "out", *flags)
    assert done.exit_code == 2 and message in done.output, done.output
    assert not (tmp_path / "out").exists()


def test_op_flags_are_generated_one_per_registry_entry() -> None:
    assert set(op_flags()) == {spec.name for cls in ops.OP_CLASSES.values() for spec in cls.cli}
    assert len(op_flags()) == sum(len(cls.cli) for cls in ops.OP_CLASSES.values())     # no flag twice


def test_gpupipe_ops_documents_each_parameter_with_its_flag() -> None:
    done = gp("ops", "unsharp")
    assert done.exit_code == 0
    assert "--unsharp SIGMA [--unsharp-amount AMOUNT] [--unsharp-threshold THRESHOLD]" in done.output
    assert "threshold: float = 0.0" in done.output and "≥ 0" in done.output
    unknown = gp("ops", "unsharpp")
    assert unknown.exit_code == 2 and "did you mean 'unsharp'?" in unknown.output


def test_help_texts_are_escaped_as_rich_escapes_them() -> None:
    """The CLI escapes its help texts without loading rich (gpupipe.cli.app.escape): the same
    text as rich.markup.escape gives, for every text the help shows and for markup-like edge cases."""
    from rich.markup import escape as rich_escape

    from gpupipe import options
    from gpupipe.cli.app import escape
    texts = [option.help for option in options.registry().values()]
    texts += [flag.spec.help or flag.op.summary for flag in op_flags().values()]
    texts += [modifier.param.doc for modifier in modifiers()]
    texts += ["[bold]x[/]", "[red]", "a [default: 3] b", "[0-255]", "[#ff0000]", "[@click]", "[/]", "\\[b]x",
              "\\\\[b]x", "ends with \\", "ends with \\\\", "[x] [y]", "[ not a tag", "[Upper]", "a[b]c[d]e", ""]
    assert len(texts) > 60
    for text in texts:
        assert escape(text) == rich_escape(text), text
