"""``benchmarks/mutation_check.py``'s planted faults still apply to the package (the check itself is slow).

The check patches a copy of the package by regular expressions anchored on
function and class names; when the code they target moves, this test says
so at once, instead of the next mutation run reporting "patch did not apply".
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mutation_check():
    name = "dict_minimize_benchmark_mutation_check"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mutation_check = _mutation_check()
FAULTS = mutation_check.faults(ROOT)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_patch_applies_and_compiles(fault):
    patched = mutation_check.planted(fault, ROOT)
    assert set(patched) == {path for path, _ in fault.patches}
    for path, text in patched.items():
        assert text != (ROOT / path).read_text(), path
    files = [arg for arg in fault.tests if arg.startswith("tests/")]
    assert files and all((ROOT / f).exists() for f in files)  # the tests that should catch it exist


def test_a_patch_that_finds_nothing_is_an_error():
    patch = mutation_check.sub_once(r"no such code", "x")
    with pytest.raises(mutation_check.PatchError, match="not found"):
        patch("def f():\n    return 1\n")
