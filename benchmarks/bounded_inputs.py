"""Bounded inputs: L-BFGS-B's bounds against the tuned first-order methods, at equal gradient evaluations.

One command, one table (task x method x framework: quality, gradient
evaluations, wall time)::

    python benchmarks/bounded_inputs.py            # full size (several minutes)
    python benchmarks/bounded_inputs.py --quick    # reduced sizes, a smoke run

Each framework runs in its own worker process (``--worker FRAMEWORK``), with
every thread pool capped at one thread. The tasks are the examples'
(``examples/adversarial.py``, ``visualize.py``, ``texture.py``) at their
default sizes; see each file's docstring for what is compared and how the
baselines were tuned. Gradient evaluations are real calls of the objective
(counted by ``examples/_bounded.Recorder``, under ``jax.jit`` and
``tf.function`` too); every baseline gets exactly the count L-BFGS-B used.
Wall times of JAX and TensorFlow include their one-off compilations (once
per objective and shape, on both sides).

Raw output: ``benchmarks/results/bounded_inputs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results" / "bounded_inputs.json"
FRAMEWORKS = ("torch", "jax", "tensorflow")


def worker(framework: str, quick: bool) -> dict[str, Any]:
    """Every task of ``framework`` (texture in PyTorch only); the examples' summaries."""
    sys.path.insert(0, str(EXAMPLES))
    if framework == "torch":
        import torch

        torch.set_num_threads(1)
    elif framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import adversarial
    import visualize

    out: dict[str, Any] = {"framework": framework}
    if quick:
        out["adversarial"] = adversarial.run(framework, n=40, rounds=4, maxiter=100, budget=20)
        out["visualize"] = visualize.run(framework, budget=30, n_units=4)
    else:
        out["adversarial"] = adversarial.run(framework)
        out["visualize"] = visualize.run(framework)
    if framework == "torch":
        import texture

        size, budget = (32, 60) if quick else (128, 200)
        out["texture"] = [texture.run(size, budget, start=start, loss_scale=scale)
                          for start, scale in (("grey", "pixels"), ("grey", "none"), ("noise", "pixels"))]
    return out


def _row(task, method, framework, quality, evals, wall, note=""):
    return {"task": task, "method": method, "framework": framework, "quality": quality, "evals": evals,
            "wall_s": round(wall, 2), "note": note}


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows of one framework's results."""
    fw = result["framework"]
    rows = []
    adv = result["adversarial"]
    s = adv["szegedy"]
    rows.append(_row(f"targeted minimal attack (Szegedy), {adv['n_images']} images", "L-BFGS-B, c-search", fw,
                     f"success {s['success_rate']:.3f}, median L2 {s['median_l2']:.3f}", s["evals"],
                     s["wall_s"]))
    for r in adv["linf"]:
        lb, pgd = r["lbfgsb"], r["pgd"]
        diff = lb["success_rate"] - pgd["success_rate"]
        task = f"L-inf attack eps={r['eps']}, {r['loss']} loss"
        rows.append(_row(task, "L-BFGS-B", fw, f"success {lb['success_rate']:.3f}", lb["evals"], lb["wall_s"],
                         f"{diff:+.3f} vs PGD"))
        rows.append(_row(task, "PGD (Madry)", fw, f"success {pgd['success_rate']:.3f}", pgd["evals"],
                         pgd["wall_s"]))
    vis = result["visualize"]
    lb = vis["methods"]["lbfgsb"]
    task = f"feature visualization, {len(vis['units'])} units"
    best = {m: vis["best_lr"][m] for m in ("adam", "normalized")}
    for label, key in (("L-BFGS-B", "lbfgsb"), (f"Adam+clamp {best['adam'][5:]}", best["adam"]),
                       (f"normalized ascent {best['normalized'][11:]}", best["normalized"])):
        m = vis["methods"][key]
        note = ""
        if key == "lbfgsb":
            others = [vis["methods"][best[k]]["objectives"] for k in best]
            wins = sum(o >= max(b[i] for b in others) for i, o in enumerate(m["objectives"]))
            top = max(vis["methods"][best[k]]["mean_objective"] for k in best)
            note = (f"{wins}/{len(m['objectives'])} units best; "
                    f"mean J {m['mean_objective'] - top:+.3f} vs best baseline")
        quality = f"mean J {m['mean_objective']:.3f}, at bound {m['mean_at_bound']:.2f}"
        rows.append(_row(task, label, fw, quality,
                         m["evals"], m["wall_s"], note))
    for tex in result.get("texture", []):
        task = f"texture {tex['size']}x{tex['size']}, start {tex['start']}, loss scale {tex['loss_scale']}"
        lb, ad = tex["methods"]["lbfgsb"], tex["methods"][tex["best_adam"]]
        rows.append(_row(task, "L-BFGS-B", fw, f"Gram loss {lb['loss']:.3g}", lb["evals"], lb["wall_s"],
                         f"{ad['loss'] / lb['loss']:.3g}x lower than Adam" if lb["loss"] < ad["loss"]
                         else f"{lb['loss'] / ad['loss']:.3g}x higher than Adam"))
        rows.append(_row(task, f"Adam+clamp {tex['best_adam'][5:]}", fw, f"Gram loss {ad['loss']:.3g}",
                         ad["evals"],
                         ad["wall_s"]))
    if result.get("texture"):
        d = result["texture"][0]["dream"]
        rows.append(_row(f"bounded deep dream, photo +- {d['eps']}", "L-BFGS-B", fw,
                         f"feature mean square {d['mean_square_before']:.3g} -> {d['mean_square_after']:.3g}",
                         d["evals"], d["wall_s"], f"{d['at_bound']:.2f} of pixels at a bound"))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | method | framework | quality | gradient evaluations | wall (s) | vs baseline |",
             "|---|---|---|---|--:|--:|---|"]
    order = {}
    for r in rows:
        order.setdefault(r["task"], len(order))
    # Grouped by task (in the order the tasks ran), frameworks together, methods in run order.
    ranked = sorted(enumerate(rows),
                    key=lambda ir: (order[ir[1]["task"]], FRAMEWORKS.index(ir[1]["framework"]), ir[0]))
    for _, r in ranked:
        lines.append(f"| {r['task']} | {r['method']} | {r['framework']} | {r['quality']} | {r['evals']} | "
                     f"{r['wall_s']} | {r['note']} |")
    return "\n".join(lines)


def compact_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per task and method, the frameworks side by side (the README's table).

    A quality, count or note that differs between frameworks is listed per
    framework (``torch / jax / tensorflow``); wall times always are.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    fws = [fw for fw in FRAMEWORKS if any(r["framework"] == fw for r in rows)]
    lines = [f"| task | method | quality | gradient evaluations | wall (s), {' / '.join(fws)} | vs baseline |",
             "|---|---|---|--:|--:|---|"]

    def cell(group, key):
        values = [str(r[key]) for r in group]
        return values[0] if len(set(values)) == 1 else " / ".join(values)

    for (task, method), group in groups.items():
        group = sorted(group, key=lambda r: FRAMEWORKS.index(r["framework"]))
        walls = " / ".join(str(r["wall_s"]) for r in group)
        lines.append(f"| {task} | {method} | {cell(group, 'quality')} | {cell(group, 'evals')} | {walls} | "
                     f"{cell(group, 'note')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--quick", action="store_true", help="reduced sizes")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--from-json", help="rebuild the rows of an earlier run's JSON from its raw results, "
                        "write them back and print the tables")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        saved["rows"] = rows = [row for res in saved["raw"] for row in rows_of(res)]
        with open(args.from_json, "w") as f:
            json.dump(saved, f, indent=1)
        print(compact_markdown(rows) + "\n\n" + markdown(rows))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.quick)))
        return
    from _common import thread_env

    env = dict(os.environ, **thread_env(1), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLES), env.get("PYTHONPATH", "")])
    results, start = [], time.perf_counter()
    for fw in args.frameworks:
        cmd = [sys.executable, __file__, "--worker", fw] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"worker {fw} failed")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{fw}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    rows = [row for res in results for row in rows_of(res)]
    import platform

    meta = {"command": "python benchmarks/bounded_inputs.py" + (" --quick" if args.quick else ""),
            "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(), "total_wall_s": round(time.perf_counter() - start, 1)}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"command": "python " + " ".join(["benchmarks/bounded_inputs.py"] + sys.argv[1:]), "meta": meta, "rows": rows, "raw": results}, f, indent=1)
    print(compact_markdown(rows) + "\n\n" + markdown(rows))


if __name__ == "__main__":
    main()
