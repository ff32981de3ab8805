"""Sphinx configuration.

Build (offline, warnings as errors): ``sphinx-build -W -b html docs docs/_build/html``.
``tests/test_docs.py`` runs that build. The gallery page lists, at build time, every
picture in ``docs/gallery/`` that its own sections do not show (see ``_other_pictures``).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent

project = "dict_minimize"
author = "dict_minimize developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
napoleon_numpy_docstring = True
# Attributes as field lists: NamedTuple fields are already documented by autodoc.
napoleon_use_ivar = True
# The frameworks are mocked: the build needs none of them and stays fast.
autodoc_mock_imports = ["torch", "tensorflow", "jax", "jaxlib", "keras"]
autodoc_member_order = "bysource"
myst_heading_anchors = 3
html_theme = "alabaster"

#: The pictures the gallery page shows in its own sections (docs/make_gallery_plots.py).
GALLERY_OWN = ("mnist1d_history.png", "mnist1d_frameworks.png", "mnist1d_landscape.png",
               "mnist1d_landscape_path.png")


def _other_pictures() -> str:
    """A gallery section for the PNGs other scripts wrote into docs/gallery/ (none: no section)."""
    pictures = sorted(p for p in (HERE / "gallery").glob("*.png") if p.name not in GALLERY_OWN)
    if not pictures:
        return ""
    blocks = ["\n## Bounded inputs and other pictures\n",
              "Written into `docs/gallery/` by the examples; listed here when the site is built.\n"]
    for p in pictures:
        caption = p.stem.replace("_", " ").replace("-", " ")
        blocks.append(f"\n```{{figure}} gallery/{p.name}\n:alt: {caption}\n:width: 90%\n\n{caption}\n```\n")
    return "".join(blocks)


def _append_pictures(app, docname, source):
    if docname == "gallery":
        source[0] += _other_pictures()


def setup(app):
    app.connect("source-read", _append_pictures)
    return {"parallel_read_safe": True}
