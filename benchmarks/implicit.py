"""Differentiating through ``argmin``: backward cost against the forward solve, unrolling, and jaxopt.

The problem (the same everywhere): ridge regression with ``m = 200``
samples and ``n`` features,

    w*(lam, y) = argmin_w  1/(2m) ||X w - y||^2 + lam/2 ||w||^2,   lam = 0.1,

and the scalar ``s = sum(w*)``; its gradient with respect to ``lam`` and
``y`` is checked against the closed form (Woodbury: an ``m x m`` solve).
Every side stops at the same gradient tolerance ``||grad_w|| <= 1e-8``
(float64).

Rows, per ``n``:

- ``argmin`` (PyTorch): the forward solve (SciPy's L-BFGS-B through
  ``torch_api.argmin``) and the backward pass (conjugate gradients with
  autograd Hessian-vector products, then one mixed-derivative product),
  timed separately, with the forward's gradient evaluations and the
  backward's Hessian-vector products;
- unrolled L-BFGS (PyTorch): ``torch.optim.LBFGS`` updates its parameters
  in place under ``no_grad`` and cannot be differentiated, so the same
  algorithm (two-loop recursion, memory 10, exact line search for the
  quadratic, the ridge gradient written out) runs with autograd recording
  every step, then ``backward()`` goes through all of them; plain
  ``torch.optim.LBFGS`` (memory 10, strong-Wolfe line search, not
  differentiable) is timed beside it as the forward a user would write;
- jaxopt (JAX, where installed): ``jaxopt.LBFGS(..., implicit_diff=True)``
  (compiled with ``jax.jit``; implicit differentiation by its own
  conjugate-gradient solve), against ``jax_api.argmin`` on the same data:
  the gradients' agreement and the forward+backward time of each.

Run ``python benchmarks/implicit.py`` (n = 1e2 .. 1e5; ``--quick``: 1e2 ..
1e4); raw output to ``benchmarks/results/implicit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":  # one BLAS thread, set before NumPy loads its BLAS
    os.environ.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})

import numpy as np  # noqa: E402

from _common import machine, markdown_table  # noqa: E402

M, LAM, GTOL = 200, 0.1, 1e-8
REPEATS = 3  # each side: one warm-up run, then the fastest of REPEATS


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, n))
    y = X @ rng.normal(size=n) + 0.1 * rng.normal(size=M)
    return X, y


def exact(X, y, lam):
    """w*, ds/dlam and ds/dy for s = sum(w*), by Woodbury (an m x m solve)."""
    m = X.shape[0]

    def solve(b):  # (X'X/m + lam I)^-1 b
        return (b - X.T @ np.linalg.solve(m * lam * np.eye(m) + X @ X.T, X @ b)) / lam

    w = solve(X.T @ y / m)
    u = solve(np.ones(X.shape[1]))
    return w, -u @ w, X @ u / m


def rel(a, b):
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- PyTorch: argmin, unrolled L-BFGS, torch.optim.LBFGS --------------------


def torch_rows(n: int) -> dict:
    import torch

    from dict_minimize.torch_api import argmin

    torch.set_num_threads(1)
    X_np, y_np = data(n)
    w_ref, d_lam_ref, d_y_ref = exact(X_np, y_np, LAM)
    X = torch.from_numpy(X_np)

    def loss(w, X, y, lam):
        r = X @ w - y
        return 0.5 * (r * r).mean() + 0.5 * lam * (w * w).sum()

    def run_argmin():
        return _argmin_side(torch, argmin, loss, X, y_np, n, w_ref, d_lam_ref, d_y_ref)

    def run_unrolled():
        return _unrolled_side(torch, X, y_np, n, w_ref, d_lam_ref, d_y_ref)

    def run_torch_lbfgs():
        return _torch_lbfgs_side(torch, loss, X, y_np, n, w_ref)

    out = {"n": n, "repeats": REPEATS}
    for name, run in (("argmin", run_argmin), ("unrolled_lbfgs", run_unrolled), ("torch_lbfgs", run_torch_lbfgs)):
        run()  # warm-up
        out[name] = min((run() for _ in range(REPEATS)), key=lambda r: r["forward_s"] + r.get("backward_s", 0.0))
    return out


def _argmin_side(torch, argmin, loss, X, y_np, n, w_ref, d_lam_ref, d_y_ref):
    """argmin: forward and backward timed apart."""
    y = torch.from_numpy(y_np).requires_grad_()
    lam = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)
    start = time.perf_counter()
    w, res = argmin(loss, torch.zeros(n, dtype=torch.float64), args=(X, y, lam), method="L-BFGS-B",
                    options={"gtol": GTOL, "ftol": 0.0, "maxiter": 20000, "maxcor": 10}, return_result=True)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    w.sum().backward()
    backward = time.perf_counter() - start
    return {
        "forward_s": forward, "backward_s": backward, "forward_nfev": int(res.nfev), "forward_nit": int(res.nit),
        "backward_hvps": res.implicit["hvps"], "cg_iterations": res.implicit["solver_iterations"],
        "w_error": rel(w.detach().numpy(), w_ref), "d_lam_error": rel(lam.grad.numpy(), d_lam_ref),
        "d_y_error": rel(y.grad.numpy(), d_y_ref),
    }


def _unrolled_side(torch, X, y_np, n, w_ref, d_lam_ref, d_y_ref):
    """Unrolled differentiable L-BFGS (the same algorithm torch.optim.LBFGS runs), backward through it."""
    y = torch.from_numpy(y_np).requires_grad_()
    lam = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)

    def grad(w):
        return X.T @ (X @ w - y) / M + lam * w

    def hess_vec(d):
        return X.T @ (X @ d) / M + lam * d

    start = time.perf_counter()
    w_u = torch.zeros(n, dtype=torch.float64)
    g = grad(w_u)
    S, Y, nit = [], [], 0
    while float(g.detach().norm()) > GTOL and nit < 20000:
        q, alphas = -g, []
        for s_, y_ in reversed(list(zip(S, Y))):
            a = (s_ @ q) / (y_ @ s_)
            alphas.append(a)
            q = q - a * y_
        if S:
            q = q * ((S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]))
        for (s_, y_), a in zip(zip(S, Y), reversed(alphas)):
            q = q + s_ * (a - (y_ @ q) / (y_ @ s_))
        step = -(g @ q) / (q @ hess_vec(q))  # exact line search on the quadratic
        w_new = w_u + step * q
        g_new = grad(w_new)
        S, Y = (S + [w_new - w_u])[-10:], (Y + [g_new - g])[-10:]
        w_u, g, nit = w_new, g_new, nit + 1
    unrolled_forward = time.perf_counter() - start
    start = time.perf_counter()
    w_u.sum().backward()
    unrolled_backward = time.perf_counter() - start
    return {
        "forward_s": unrolled_forward, "backward_s": unrolled_backward, "nit": nit,
        "w_error": rel(w_u.detach().numpy(), w_ref), "d_lam_error": rel(lam.grad.numpy(), d_lam_ref),
        "d_y_error": rel(y.grad.numpy(), d_y_ref),
    }


def _torch_lbfgs_side(torch, loss, X, y_np, n, w_ref):
    """torch.optim.LBFGS, forward only (it cannot be differentiated)."""
    y = torch.from_numpy(y_np)
    w_t = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w_t], lr=1, max_iter=20000, tolerance_grad=GTOL, tolerance_change=0.0,
                            history_size=10, line_search_fn="strong_wolfe")
    evaluations = [0]

    def closure():
        evaluations[0] += 1
        opt.zero_grad()
        value = loss(w_t, X, y, LAM)
        value.backward()
        return value

    start = time.perf_counter()
    opt.step(closure)
    return {"forward_s": time.perf_counter() - start, "nfev": evaluations[0],
            "w_error": rel(w_t.detach().numpy(), w_ref)}


# ---- JAX: argmin against jaxopt ---------------------------------------------


def jax_rows(n: int) -> dict | None:
    try:
        import jaxopt
    except ImportError:
        return None
    import jax
    import jax.numpy as jnp

    from dict_minimize.jax_api import argmin

    X_np, y_np = data(n)
    _, d_lam_ref, d_y_ref = exact(X_np, y_np, LAM)
    with jax.enable_x64(True):
        X, y, lam = jnp.asarray(X_np), jnp.asarray(y_np), jnp.asarray(LAM)

        def loss(w, lam, X, y):
            r = X @ w - y
            return 0.5 * jnp.mean(r * r) + 0.5 * lam * jnp.sum(w * w)

        def ours(lam, y):
            w = argmin(loss, jnp.zeros(n), args=(lam, X, y), method="L-BFGS-B",
                       options={"gtol": GTOL, "ftol": 0.0, "maxiter": 20000, "maxcor": 10})
            return jnp.sum(w)

        solver = jaxopt.LBFGS(fun=loss, tol=GTOL, maxiter=20000, history_size=10, implicit_diff=True)

        @jax.jit
        def theirs_grad(lam, y):
            return jax.grad(lambda lam, y: jnp.sum(solver.run(jnp.zeros(n), lam, X, y).params),
                            argnums=(0, 1))(lam, y)

        out = {"n": n}
        for name, run in (("argmin", lambda: jax.grad(ours, argnums=(0, 1))(lam, y)),
                          ("jaxopt", lambda: theirs_grad(lam, y))):
            jax.block_until_ready(run())  # compile / warm up
            times = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                g_lam, g_y = jax.block_until_ready(run())
                times.append(time.perf_counter() - start)
            out[name] = {"forward_backward_s": min(times),
                         "d_lam_error": rel(g_lam, d_lam_ref), "d_y_error": rel(g_y, d_y_ref),
                         "grad": (float(g_lam), np.asarray(g_y))}
        agreement = rel(np.concatenate([[out["argmin"]["grad"][0]], out["argmin"]["grad"][1]]),
                        np.concatenate([[out["jaxopt"]["grad"][0]], out["jaxopt"]["grad"][1]]))
        for name in ("argmin", "jaxopt"):
            del out[name]["grad"]
        out["agreement"] = agreement
        return out


def tables(results: dict) -> str:
    rows = []
    for r in results["torch"]:
        a, u, t = r["argmin"], r["unrolled_lbfgs"], r["torch_lbfgs"]
        rows.append([
            f"{r['n']:.0e}", f"{a['forward_s']:.3f}", a["forward_nfev"], f"{a['backward_s']:.3f}",
            a["backward_hvps"], f"{a['backward_s'] / a['forward_s']:.2f}",
            f"{max(a['d_lam_error'], a['d_y_error']):.1e}",
            f"{u['forward_s'] + u['backward_s']:.3f}", u["nit"], f"{u['backward_s']:.3f}",
            f"{max(u['d_lam_error'], u['d_y_error']):.1e}", f"{t['forward_s']:.3f}", t["nfev"],
        ])
    out = markdown_table(
        ["n", "argmin forward (s)", "gradient evals", "argmin backward (s)", "HVPs", "backward / forward",
         "gradient error", "unrolled L-BFGS fwd+bwd (s)", "unrolled iterations", "of which backward (s)",
         "unrolled gradient error", "torch.optim.LBFGS forward (s)", "its evals"],
        rows, right=["argmin forward (s)", "gradient evals", "argmin backward (s)", "HVPs",
                     "backward / forward", "unrolled L-BFGS fwd+bwd (s)", "unrolled iterations",
                     "of which backward (s)", "torch.optim.LBFGS forward (s)", "its evals"],
    )
    jrows = [[f"{r['n']:.0e}", f"{r['argmin']['forward_backward_s']:.3f}", f"{r['jaxopt']['forward_backward_s']:.3f}",
              f"{max(r['argmin']['d_lam_error'], r['argmin']['d_y_error']):.1e}",
              f"{max(r['jaxopt']['d_lam_error'], r['jaxopt']['d_y_error']):.1e}", f"{r['agreement']:.1e}"]
             for r in results["jax"] if r]
    if jrows:
        out += "\n\n" + markdown_table(
            ["n", "jax_api.argmin fwd+bwd (s)", "jaxopt LBFGS implicit_diff fwd+bwd (s)", "argmin gradient error",
             "jaxopt gradient error", "argmin vs jaxopt"],
            jrows, right=["jax_api.argmin fwd+bwd (s)", "jaxopt LBFGS implicit_diff fwd+bwd (s)"])
    return out


def main(sizes, jax_sizes, path: str | None) -> dict:
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "m": M, "lam": LAM, "gtol": GTOL,
               "torch": [], "jax": []}
    for n in sizes:
        results["torch"].append(torch_rows(n))
        print(json.dumps(results["torch"][-1]), flush=True)
    for n in jax_sizes:
        results["jax"].append(jax_rows(n))
        print(json.dumps(results["jax"][-1]), flush=True)
    print(tables(results))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        results = {"command": "python " + " ".join(["benchmarks/implicit.py"] + sys.argv[1:]), **results}
        Path(path).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n up to 1e4 (and jaxopt at 1e2, 1e3)")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "implicit.json"))
    a = parser.parse_args()
    sizes = [100, 1000, 10000] if a.quick else [100, 1000, 10000, 100000]
    main(sizes, [100, 1000] if a.quick else [100, 1000, 10000], a.json)
