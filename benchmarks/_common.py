"""Timing and reporting helpers shared by the benchmarks.

Nothing here imports a deep-learning framework: the orchestrating process
stays light and each framework runs in its own worker process.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and CPU seconds of one call of ``run``, and what it returned.

    CPU time is the whole process's (every thread): on a machine shared with
    other jobs it is far steadier than wall-clock time, which also counts
    the time spent waiting for a core. Garbage is collected before the
    clock starts and the collector is kept off while it runs, so that a
    collection triggered by the other side's garbage does not land in this
    side's time.

    Examples
    --------
    >>> wall, cpu, value = timed(lambda: sum(range(10)))
    >>> value, wall >= 0.0, cpu >= 0.0
    (45, True, True)
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start_cpu = time.process_time()
        start = time.perf_counter()
        value = run()
        wall = time.perf_counter() - start
        cpu = time.process_time() - start_cpu
    finally:
        if was_enabled:
            gc.enable()
    return wall, cpu, value


def interleaved(
    runs: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, list[tuple[float, float, Any]]]:
    """Time each of ``runs`` ``repeats`` times, interleaved, after one warm-up run each.

    Repeat ``r`` runs the sides in order for even ``r`` and in reverse order
    for odd ``r`` (ABBA...), so a slow drift of the machine (frequency,
    another process) weighs on every side alike.

    Parameters
    ----------
    runs : dict of str to callable
        Side name -> a function doing one complete run.
    repeats : int
        Timed runs per side (at least 1).

    Returns
    -------
    dict of str to list of (float, float, Any)
        Side name -> ``[(wall_s, cpu_s, result), ...]``; entry 0 is the
        warm-up (compilation, allocator), entries ``1..repeats`` the timed runs.

    Examples
    --------
    >>> out = interleaved({"a": lambda: 1, "b": lambda: 2}, repeats=3)
    >>> [len(v) for v in out.values()], out["b"][2][2]
    ([4, 4], 2)
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(runs)
    out: dict[str, list[tuple[float, float, Any]]] = {name: [timed(runs[name])] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(timed(runs[name]))
    return out


def spread(seconds: Sequence[float]) -> float:
    """Relative spread of repeated timings: ``(max - min) / median``.

    Examples
    --------
    >>> round(spread([1.0, 1.1, 0.9]), 3)
    0.2
    """
    if not seconds:
        raise ValueError("spread of no timings")
    mid = statistics.median(seconds)
    return (max(seconds) - min(seconds)) / mid if mid > 0 else 0.0


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values``.

    The order statistics ``x_(l)`` and ``x_(n-l+1)`` with the largest ``l``
    such that ``P(Binomial(n, 1/2) < l) <= (1 - level) / 2`` (the sign
    test's interval: it assumes only that the values are independent draws).
    With too few values for ``level`` it is the whole range.

    Examples
    --------
    >>> median_ci([1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 1.02, 0.98, 1.01, 0.99])
    (0.95, 1.1)
    """
    if not values:
        raise ValueError("median_ci of no values")
    x, n = sorted(values), len(values)
    tail, below, l = (1.0 - level) / 2.0, 0.0, 0
    while l < n // 2 and below + math.comb(n, l) / 2.0**n <= tail:
        below += math.comb(n, l) / 2.0**n  # P(B <= l) after this step
        l += 1
    # The interval x_(k) .. x_(n-k+1) (1-indexed) covers the median with
    # probability 1 - 2 P(B <= k - 1), at least ``level`` for k = l.
    k = max(l, 1)
    return x[k - 1], x[n - k]


def machine() -> str:
    """A one-line description of this machine (CPU, cores, Python).

    Examples
    --------
    >>> "Python" in machine()
    True
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, {platform.system()}, Python {platform.python_version()}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """A GitHub Markdown table; the columns named in ``right`` are right-aligned.

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [["x", 1]], right=["b"]))
    | a | b |
    |---|--:|
    | x | 1 |
    """
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("--:" if name in right else "---" for name in header) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that cap every framework's thread pools at ``threads`` (0: no cap).

    Each benchmark's workers run with these: on a small shared machine more
    threads mostly contend.

    Examples
    --------
    >>> thread_env(2)["OMP_NUM_THREADS"], thread_env(0)
    ('2', {})
    """
    if threads == 0:
        return {}
    t = str(threads)
    env = {name: t for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    if threads == 1:
        xla = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{xla} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    return env


def run_worker(script: str | Path, worker_args: Sequence[str], threads: int) -> dict:
    """Run ``script --out FILE *worker_args`` in a fresh process; what it wrote to FILE, as a dict.

    The worker's thread pools are capped by :func:`thread_env`; its stdout
    (framework chatter) joins its stderr (progress) on our stderr, so only
    the report reaches our stdout. A worker that exits non-zero or writes
    nothing gives ``{"error": ...}``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp()) / "w.py"
    >>> _ = tmp.write_text("import sys, json; open(sys.argv[2], 'w').write(json.dumps({'x': sys.argv[3]}))")
    >>> run_worker(tmp, ["hello"], threads=1)
    {'x': 'hello'}
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env.update(thread_env(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(script).resolve()), "--out", str(out), *worker_args]
        try:
            stdout = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a captured stderr (pytest, doctest)
            stdout = subprocess.DEVNULL
        proc = subprocess.run(cmd, env=env, stdout=stdout, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"error": f"worker exited with status {proc.returncode}"}
        return json.loads(out.read_text())


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this benchmark was started, for its results file: ``python benchmarks/x.py --flag ...``.

    Examples
    --------
    >>> command_line(["benchmarks/training.py", "--quick"])
    'python benchmarks/training.py --quick'
    """
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    if script.is_absolute():
        try:
            script = script.relative_to(Path(__file__).resolve().parent.parent)
        except ValueError:
            pass
    return " ".join(["python", str(script), *argv[1:]])
