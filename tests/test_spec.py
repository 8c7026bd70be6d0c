"""Specs: variants, TOML files, output names, hashing, prefix sharing, and resize meaning the same in each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpupipe import ops
from gpupipe.errors import UsageError
from gpupipe.spec import OpTrie, Spec, Variant


def test_resize_keeps_the_aspect_ratio_everywhere_unless_told_to_stretch(tmp_path: Path) -> None:
    """A resize of an 1800x1200 photo into 1600x1600 fits it (1600x1067) from a spec file, the API
    and the CLI alike; mode "exact" stretches it."""
    import shutil
    import subprocess
    import sys

    import gpupipe
    from PIL import Image

    from tests.support.corpus import CORPUS
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CORPUS / "exif-orientation" / "Landscape_1.jpg", src / "photo.jpg")      # 1800x1200
    toml = tmp_path / "spec.toml"
    toml.write_text('[[variant]]\nname = "fit"\nformat = "png"\nops = [{ op = "resize", width = 1600, height = 1600 }]\n'
                    '[[variant]]\nname = "exact"\nformat = "png"\n'
                    'ops = [{ op = "resize", width = 1600, height = 1600, mode = "exact" }]\n')
    gpupipe.run(src, tmp_path / "spec", toml, backend="cpu", journal=False)
    gpupipe.run(src, tmp_path / "api", [ops.Resize(1600, 1600)], backend="cpu", journal=False)
    subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / "cli"), "--resize",
                    "1600x1600", "--quiet"], check=True)
    sizes = {path.relative_to(tmp_path).as_posix(): Image.open(path).size
             for path in sorted(tmp_path.glob("*/photo*")) if path.parent.name != "in"}
    assert sizes == {"spec/photo_fit.png": (1600, 1067), "spec/photo_exact.png": (1600, 1600),
                     "api/photo.jpg": (1600, 1067), "cli/photo.jpg": (1600, 1067)}


def test_output_names() -> None:
    rel = "trip/IMG_1.JPG"
    assert Variant().output_path(rel, "jpeg") == "trip/IMG_1.jpg"
    assert Variant(name="thumb", format="webp").output_path(rel, "jpeg") == "trip/IMG_1_thumb.webp"
    assert Variant().output_path("x.gif", "gif") == "x.png"        # we don't write GIF
    assert Variant(template="{variant}/{stem}.{ext}", name="v").output_path(rel, "png") == "trip/v/IMG_1.png"
    with pytest.raises(UsageError, match="unknown field"):
        Variant(template="{stemm}.{ext}")
    with pytest.raises(UsageError, match="inside the output"):
        Variant(template="../{stem}.{ext}")


def test_spec_from_toml_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('''
[defaults]
format = "webp"
quality = 70
[[variant]]
name = "small"
ops = [{ op = "thumbnail", size = 128 }]
[[variant]]
name = "big"
format = "jpeg"
ops = [{ op = "resize", width = 1024, height = 1024, mode = "fit" }, { op = "sharpen" }]
''')
    spec = Spec.from_toml(path)
    assert [v.name for v in spec.variants] == ["small", "big"]
    assert spec.variants[0].format == "webp" and spec.variants[0].quality == 70
    assert spec.variants[1].format == "jpeg"
    assert spec.hash() == Spec.from_toml(path).hash()
    assert spec.hash() != Spec.single([ops.Thumbnail(128)]).hash()
    assert spec.decode_hint(4000, 3000) == (2048, 1536)


def test_an_ops_revision_changes_the_hash_of_the_specs_that_use_it(monkeypatch) -> None:
    """An op whose bytes changed (its revision) makes a journal redo what the earlier revision made;
    specs without a revised op keep the hash they always had (the canonical spec's sha256)."""
    import hashlib
    import json
    blur = Spec.single([ops.Thumbnail(256), ops.GaussianBlur(3.0)])
    plain = Spec.single([ops.Thumbnail(256), ops.Sharpen()])
    canonical = json.dumps(plain.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert plain.hash() == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert ops.GaussianBlur.revision == 2 and ops.Unsharp.revision == 2
    now = blur.hash()
    monkeypatch.setattr(ops.GaussianBlur, "revision", 1)
    assert blur.hash() != now
    assert plain.hash() == hashlib.sha256(canonical.encode()).hexdigest()[:16]


@pytest.mark.parametrize("text,needle", [
    ("[[variant]]\nops = 3", "not valid|ops"), ("x = 1", "unknown top-level"), ("[[variant", "not valid TOML"),
    ('[[variant]]\nname="a"\nops=[]\n[[variant]]\nname="a"\nops=[]', "distinct name"),
    ('[[variant]]\nops=[{op="thumbnail", size=9}]\nqualty=3', "unknown key"),
])
def test_bad_specs(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=needle):
        Spec.from_toml(path)


def test_op_trie_shares_common_prefixes() -> None:
    a = Variant((ops.Thumbnail(512), ops.Sharpen()), name="a")
    b = Variant((ops.Thumbnail(512), ops.Grayscale()), name="b")
    c = Variant((ops.Thumbnail(512),), name="c")
    root = OpTrie.build([a, b, c])
    assert len(root.children) == 1
    shared = root.children[0]
    assert shared.variant_indices == [2] and len(shared.children) == 2


def test_watermark_files_are_checked_up_front_and_resolved_next_to_the_spec(tmp_path: Path) -> None:
    from PIL import Image
    Image.new("RGBA", (20, 10), (255, 0, 0, 128)).save(tmp_path / "logo.png")
    path = tmp_path / "s.toml"
    path.write_text('ops = [{ op = "watermark", image = "logo.png" }]\n')
    spec = Spec.from_toml(path)
    assert spec.variants[0].ops[0].image == str(tmp_path / "logo.png")
    spec.check_resources()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="cannot be read"):
        Spec.single([ops.Watermark(image=str(tmp_path / "broken.png"))]).check_resources()
    with pytest.raises(UsageError, match="watermark font .*none.ttf does not exist"):
        Spec.single([ops.Watermark(text="x", font=str(tmp_path / "none.ttf"))]).check_resources()


@pytest.mark.parametrize("build, hint", [
    (lambda: ops.Watermark(text="x", position="bottom-rigth"), "did you mean 'bottom-right'?"),
    (lambda: ops.Resize(10, 10, mode="fitt"), "did you mean 'fit'?"),
    (lambda: ops.Resize(10, 10, filter="lanczos"), "did you mean 'lanczos3'?"),
    (lambda: ops.Flip("horizonal"), "did you mean 'horizontal'?"),
    (lambda: ops.op_from_dict({"op": "watermak", "text": "x"}), "did you mean 'watermark'?"),
    (lambda: ops.op_from_dict({"op": "resize", "widht": 3}), "did you mean 'width'?"),
    (lambda: Spec.from_dict({"variant": [{"name": "a", "formt": "png", "ops": []}]}), "did you mean 'format'?"),
    (lambda: Spec.single([], format="wepb"), "did you mean 'webp'?"),
])
def test_a_near_miss_says_what_was_meant(build, hint: str) -> None:
    with pytest.raises(UsageError, match=re.escape(hint)):
        build()
