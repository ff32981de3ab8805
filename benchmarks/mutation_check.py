"""Does the test suite catch the faults it claims to? Plant each in a copy of the package and see.

Each fault is a small textual patch (anchored on a function or class name
and a short regular expression, so that it survives unrelated edits) to a
copy of this checkout in a temporary directory. The tests that should catch
it then run against the copy (``PYTHONPATH=<copy>``, from the copy's own
``tests/``). A fault is *caught* when those tests fail.

Before any fault, the same tests run on the unpatched copy: they must pass,
or a failure would mean nothing. A patch that does not apply is reported as
such (and the exit status is 1), never counted as caught. A fault whose
tests are strict xfails on the unpatched copy is already in the package:
the script says so rather than scoring it.

Usage::

    python benchmarks/mutation_check.py                 # every fault, results/mutation_check.json
    python benchmarks/mutation_check.py --faults l1-grad-norm,dropped-constraint-jacobian
    python benchmarks/mutation_check.py --list

Not part of the default test run (it runs parts of the suite once per
fault: a few minutes). The exit status is 0 only when every fault applied
and was caught.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import machine  # noqa: E402

RESULTS = HERE / "results" / "mutation_check.json"
#: What the copy holds: the package, its tests and what the tests read.
COPIED = ("dict_minimize", "tests", "examples", "setup.cfg", "pyproject.toml")
TIMEOUT_S = 1800


class PatchError(RuntimeError):
    """A fault's patch found nothing to change: the code moved, the check must be updated."""


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    #: (path in the copy, function(text) -> patched text), all of which must apply.
    patches: tuple[tuple[str, Callable[[str], str]], ...]
    #: pytest arguments (files and -k) of the tests that should catch it.
    tests: tuple[str, ...]


def sub_once(pattern: str, repl: str, flags: int = re.M) -> Callable[[str], str]:
    """A patch replacing exactly the matches of ``pattern`` (at least one), or :class:`PatchError`."""

    def patch(text: str) -> str:
        new, count = re.subn(pattern, repl, text, flags=flags)
        if count == 0:
            raise PatchError(f"pattern not found: {pattern!r}")
        return new

    return patch


def append_after_class(class_pattern: str, method: str, code: Callable[[str], str]) -> Callable[[str], str]:
    """A patch appending ``code(class_name)`` to the module; the class must define ``method``."""

    def patch(text: str) -> str:
        match = re.search(class_pattern, text, flags=re.M)
        if match is None:
            raise PatchError(f"class not found: {class_pattern!r}")
        if not re.search(rf"^\s+def {method}\(", text[match.end():], flags=re.M):
            raise PatchError(f"{match.group(1)} has no method {method}")
        return text + "\n\n" + code(match.group(1)) + "\n"

    return patch


def insert_first_line(anchor: str, line: str) -> Callable[[str], str]:
    """A patch inserting ``line`` as the first statement of the function that ``anchor`` opens."""

    def patch(text: str) -> str:
        match = re.search(anchor, text, flags=re.M | re.S)
        if match is None:
            raise PatchError(f"function not found: {anchor!r}")
        body = re.compile(r"\n([ \t]+)\S").search(text, match.end() - 1)
        if body is None:
            raise PatchError(f"no body after {anchor!r}")
        indent = body.group(1)
        return text[: match.end()] + f"{indent}{line}\n" + text[match.end():]

    return patch


def in_package(copy: Path, filename_pattern: str, needle: str) -> str:
    """The package file (relative to the copy) that matches ``needle``: found, not assumed."""
    hits = [p for p in sorted((copy / "dict_minimize").rglob(filename_pattern))
            if re.search(needle, p.read_text(), flags=re.M)]
    if not hits:
        raise PatchError(f"no file under dict_minimize/ matching {filename_pattern} has {needle!r}")
    return str(hits[0].relative_to(copy))


_TWICE = '''
def _mutation_twice(value_and_grad):
    """MUTATION: every evaluation runs the autodiff pass twice at the same point."""
    if value_and_grad is None:
        return None

    def twice(x, args):
        value_and_grad(x, args)
        return value_and_grad(x, args)

    return twice
'''


def _stale_hooks(cls: str) -> str:
    return f'''# MUTATION: value-and-gradient hooks reused across minimize calls by fun's identity and layout.
_mutation_hooks = {{}}
_mutation_value_and_grad = {cls}.value_and_grad


def _mutation_stale_value_and_grad(self, fun, layout):
    key = (id(fun), layout)
    if key not in _mutation_hooks:
        _mutation_hooks[key] = (fun, _mutation_value_and_grad(self, fun, layout))
    return _mutation_hooks[key][1]


{cls}.value_and_grad = _mutation_stale_value_and_grad'''


def faults(copy: Path) -> list[Fault]:
    """The planted faults; ``copy`` is searched for the files that hold the code they change."""
    eager = in_package(copy, "*.py", r"^class EagerValue\b")
    return [
        Fault(
            "second-autodiff-pass",
            "every evaluation runs the value-and-gradient pass twice at the same point",
            (("dict_minimize/core/objective.py",
              lambda t: sub_once(r"^(\s+)self\._value_and_grad = value_and_grad\s*$",
                                 r"\1self._value_and_grad = _mutation_twice(value_and_grad)")(t) + _TWICE),),
            ("tests/test_contract.py", "-k", "memo"),
        ),
        Fault(
            "l1-grad-norm",
            "the history's gradient norm is the L1 norm",
            (("dict_minimize/core/callbacks.py",
              sub_once(r"(return\s*)math\.sqrt\((\w+)\.dot\(\w+\)\).*$",
                       r"\1float(np.abs(\2).sum())")),),
            ("tests/test_callbacks.py", "-k", "gradient_norm"),
        ),
        Fault(
            "zero-complex-step",
            "the complex step is cast to real before fun sees it (every cs gradient is zero)",
            ((eager, insert_first_line(r"^class EagerValue\b.*?def __call__\(self, x\b[^\n]*:\n",
                                       "x = x.real")),),
            ("tests/test_silent_wrong_answers.py", "tests/test_scipy_parity.py", "-k", "complex_step or cs"),
        ),
        Fault(
            "stale-cache-key",
            "the compile cache's key keeps only the hook kind: x0's layout and static args are ignored",
            (("dict_minimize/core/cache.py",
              insert_first_line(r"^    def get\(self, fun\b[^\n]*\n", "key = key[:1]")),),
            ("tests/test_silent_wrong_answers.py", "-k", "new_shapes_and_args"),
        ),
        Fault(
            "stale-compiled-fun",
            "value-and-gradient hooks reused across minimize calls by fun's identity (jax, tensorflow)",
            tuple((f"dict_minimize/{module}.py",
                   append_after_class(r"^class (\w+)\(Backend\):", "value_and_grad", _stale_hooks))
                  for module in ("jax_api", "tensorflow_api")),
            ("tests/test_silent_wrong_answers.py", "-k", "change_between_calls"),
        ),
        Fault(
            "dropped-constraint-jacobian",
            "the autodiff constraint Jacobian handed to SciPy is zero",
            (("dict_minimize/core/constraints.py",
              sub_once(r"(def jac\(self, x\):\n\s+self\._at\(x\)\n\s+)return self\._j\b",
                       r"\1return 0.0 * self._j")),),
            ("tests/test_constraints_autodiff.py", "-k", "min_norm or nearest_point or several_constraints"),
        ),
        Fault(
            "float32-cast-lost",
            "float32 leaves come back float64 (numpy and torch backends do not cast back)",
            (("dict_minimize/numpy_api.py",
              sub_once(r"return \[piece\.astype\(dt\) for piece, dt in "
                       r"zip\(layout\.split\(x\), layout\.dtypes\)\]",
                       "return [piece for piece, dt in zip(layout.split(x), layout.dtypes)]")),
             ("dict_minimize/torch_api.py", sub_once(r"if info\.transfer == torch\.float32:", "if False:"))),
            ("tests/test_contract.py", "-k", "dtypes_preserved or mixed_dtypes"),
        ),
    ]


def planted(fault: Fault, copy: Path) -> dict[str, str]:
    """Each file ``fault`` changes, patched (not written): path -> new text; :class:`PatchError` if not."""
    out = {}
    for path, patch in fault.patches:
        before = out.get(path, (copy / path).read_text())
        after = patch(before)
        if after == before:
            raise PatchError(f"{path}: the patch changed nothing")
        compile(after, path, "exec")  # a patch that breaks the syntax would be caught for nothing
        out[path] = after
    return out


def make_copy(dest: Path) -> Path:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def run_tests(copy: Path, tests: tuple[str, ...]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-rfEXx", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        out, rc = (err.stdout or "") if isinstance(err.stdout, str) else "", "timeout"
    lines = out.splitlines()
    return {
        "command": "PYTHONPATH=<copy> python -m pytest " + " ".join(cmd[3:]),
        "returncode": rc,
        "seconds": round(time.perf_counter() - start, 1),
        "failed": [line for line in lines if line.startswith(("FAILED", "ERROR", "XPASS"))][:10],
        "xfailed": sum(1 for line in lines if line.startswith("XFAIL")),
        "summary": next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)),
                        lines[-1] if lines else ""),
    }


def check_imports_copy(copy: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(copy))
    where = subprocess.run([sys.executable, "-c", "import dict_minimize; print(dict_minimize.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the copy's tests would import {where}, not the copy")


def check_fault(fault: Fault, root: Path, base: Path) -> dict:
    """Run ``fault``'s tests on the unpatched copy ``base``, then on a patched copy under ``root``."""
    record = {"fault": fault.name, "what": fault.what, "files": [p for p, _ in fault.patches]}
    baseline = run_tests(base, fault.tests)
    record["baseline"] = baseline
    mutant = make_copy(root / fault.name)
    try:
        for path, after in planted(fault, mutant).items():
            before = (mutant / path).read_text()
            (mutant / path).write_text(after)
            diff = difflib.unified_diff(before.splitlines(), after.splitlines(), path, path, n=0, lineterm="")
            record.setdefault("diff", []).extend(list(diff)[2:40])
    except PatchError as err:
        record.update(status="patch did not apply", error=str(err), caught=False)
        return record
    if baseline["returncode"] != 0:
        record.update(status="baseline fails: the check means nothing until it passes", caught=False)
        return record
    record["mutant"] = run_tests(mutant, fault.tests)
    caught = record["mutant"]["returncode"] != 0
    if not caught and baseline["xfailed"]:
        status = "not caught: its tests are xfails on the unpatched package (the fault is already there)"
    else:
        status = "caught" if caught else "NOT CAUGHT"
    record.update(status=status, caught=caught)
    return record


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", help="comma-separated subset (default: all)")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help=f"output (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dict_minimize_mutants_") as tmp:
        root = Path(tmp)
        probe = make_copy(root / "probe")
        check_imports_copy(probe)
        every = faults(probe)
        if args.list:
            for f in every:
                print(f"{f.name}: {f.what}")
            return 0
        chosen = every
        if args.faults:
            names = args.faults.split(",")
            unknown = sorted(set(names) - {f.name for f in every})
            if unknown:
                parser.error(f"unknown faults {unknown}; --list shows them")
            chosen = [f for f in every if f.name in names]
        records = []
        for fault in chosen:
            print(f"{fault.name} ...", file=sys.stderr, flush=True)
            record = check_fault(fault, root, probe)
            print(f"  {record['status']}", file=sys.stderr, flush=True)
            records.append(record)
    caught = sum(r["caught"] for r in records)
    data = {
        "command": "python benchmarks/mutation_check.py"
                   + (f" --faults {args.faults}" if args.faults else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), "machine": machine(),
        "score": f"{caught}/{len(records)} caught", "faults": records,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"mutation check: {data['score']}")
    for r in records:
        print(f"  {r['fault']}: {r['status']}")
    return 0 if caught == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
