"""The README's and docs' benchmark tables: what ``benchmarks/report.py`` makes of the committed results."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _report():
    name = "dict_minimize_benchmark_report"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = _report()


@pytest.mark.parametrize("path", sorted({path for path, _ in report.blocks()}))
def test_generated_blocks_match_the_committed_results(path):
    """Edit the results (by re-running a benchmark), then run ``python benchmarks/report.py``."""
    assert (ROOT / path).read_text() == report.render()[path], (
        f"{path} is out of date with benchmarks/results/: run python benchmarks/report.py")


def test_every_results_file_names_its_command():
    files = sorted(RESULTS.glob("*.json"))
    assert {f.stem for f in files} >= {"overhead", "training", "training_quick", "curvature"}
    for f in files:
        data = json.loads(f.read_text())
        assert data["command"].startswith("python benchmarks/"), f.name
        if "transcribed" in data:  # figures copied from an earlier run say so
            assert "not re-measured" in data["transcribed"], f.name


def test_tables_show_what_the_files_hold():
    """Spot checks that the generator does not drop rows: every case and every training row is shown."""
    readme = (ROOT / "README.md").read_text()
    overhead = json.loads((RESULTS / "overhead.json").read_text())
    block = re.search(r"<!-- table:overhead -->(.*?)<!-- /table:overhead -->", readme, re.S).group(1)
    backends = ("| numpy", "| torch", "| jax", "| tensorflow")
    assert sum(line.startswith(backends) for line in block.splitlines()) == len(overhead["cases"])
    training = json.loads((RESULTS / "training.json").read_text())
    block = re.search(r"<!-- table:training -->(.*?)<!-- /table:training -->", readme, re.S).group(1)
    for row in training["rows"]:  # the rows where Adam wins included
        cells = f"| {row['framework']} | {row['model']} | {row['method']} | {row['test_accuracy']:.3f} |"
        assert cells in block


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="table:nope"):
        report.replace_block("no markers here", "nope", "x")
