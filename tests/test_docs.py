"""The documentation site builds, offline, with warnings as errors (skipped without Sphinx)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_with_warnings_as_errors(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", str(DOCS), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    api = (tmp_path / "api.html").read_text(encoding="utf-8")
    for name in ("numpy_api.minimize", "torch_api.minimize", "tensorflow_api.minimize", "jax_api.minimize",
                 "plot.loss_landscape", "plot.plot_history", "plot.plot_landscape", "growing_batches"):
        assert f'id="dict_minimize.{name}"' in api, f"the API reference lacks {name}"
    gallery = (tmp_path / "gallery.html").read_text(encoding="utf-8")
    for picture in sorted((DOCS / "gallery").glob("*.png")):  # every picture is on the gallery page
        assert f"gallery/{picture.name}" in gallery or f"_images/{picture.name}" in gallery, picture.name
        assert (tmp_path / "_images" / picture.name).exists(), picture.name


def test_gallery_pictures_are_small():
    pictures = sorted((DOCS / "gallery").glob("*.png"))
    assert pictures, "docs/gallery/ has no picture"
    for picture in pictures:
        assert picture.stat().st_size < 300 * 1024, f"{picture.name} is {picture.stat().st_size // 1024} KB"


def _conf(monkeypatch, root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    monkeypatch.setattr(conf, "HERE", root)
    return conf


def test_gallery_lists_the_pictures_other_scripts_wrote(monkeypatch, tmp_path):
    (tmp_path / "gallery").mkdir()
    conf = _conf(monkeypatch, tmp_path)
    (tmp_path / "gallery" / conf.GALLERY_OWN[0]).write_bytes(b"png")
    assert conf._other_pictures() == ""  # only the page's own pictures: no extra section
    (tmp_path / "gallery" / "adversarial_pairs.png").write_bytes(b"png")
    (tmp_path / "gallery" / "texture-bounded.png").write_bytes(b"png")
    section = conf._other_pictures()
    assert "gallery/adversarial_pairs.png" in section and "gallery/texture-bounded.png" in section
    assert conf.GALLERY_OWN[0] not in section
    assert section.index("adversarial_pairs") < section.index("texture-bounded")
    assert "\nadversarial pairs\n" in section  # the caption, from the file name
