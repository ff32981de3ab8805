"""Importing dict_minimize imports no framework; one *_api imports only its own."""

import json
import subprocess
import sys

import pytest

from conftest import BACKENDS

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras")


def _imported_after(statement: str) -> set[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_package_imports_no_framework():
    assert _imported_after(
        "import dict_minimize, dict_minimize.core, dict_minimize.numpy_api\n"
        "from dict_minimize import growing_batches"
    ) == set()


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_backend_imports_only_its_framework(name):
    """The backend adds no framework to what importing its own framework loads.

    (TensorFlow itself imports Keras 3, which imports JAX when JAX is installed.)
    """
    loaded = _imported_after(f"import dict_minimize.{name}_api")
    framework_alone = _imported_after(f"import {name}")
    assert name in loaded
    assert loaded <= framework_alone, f"dict_minimize.{name}_api also imported {sorted(loaded - framework_alone)}"


def test_plot_module_imports_neither_matplotlib_nor_a_framework():
    """dict_minimize.plot imports matplotlib when it draws, and a framework when x's leaves need it."""
    code = (
        "import sys, json\nimport dict_minimize, dict_minimize.plot\n"
        f"print(json.dumps([m for m in {FRAMEWORKS + ('matplotlib',)!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    landscape = (
        "import numpy as np\nfrom dict_minimize.plot import loss_landscape\n"
        "loss_landscape(lambda p: float((p['w'] ** 2).sum()), {'w': np.ones((2, 2))}, points=3)"
    )
    assert _imported_after(landscape) == set()
