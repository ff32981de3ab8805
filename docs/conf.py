"""Sphinx configuration: ``pip install -e ".[docs]" && sphinx-build docs docs/_build``."""

project = "dict_minimize"
author = "dict_minimize developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
napoleon_numpy_docstring = True
autodoc_mock_imports = ["torch", "tensorflow", "jax", "jaxlib", "keras"]
html_theme = "alabaster"
