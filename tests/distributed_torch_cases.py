"""The torch distributed test cases: run by two worker processes, and in one process as the reference.

``python distributed_torch_cases.py RANK SIZE STORE_PORT OUT CASE...`` joins a
gloo process group through the parent's TCPStore on 127.0.0.1, runs each
case in turn on its shard, and pickles what each case returned or raised.
Cases that raise leave every rank at the same point, so the next case runs
in the same group.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from datetime import timedelta

import numpy as np
import torch

import distributed_problems as problems
from dict_minimize.torch_api import minimize

TIMEOUT_S = 60  # every wait in a collective ends within this


def _tensors(X, y):
    return torch.as_tensor(X), torch.as_tensor(y)


def _x0(rank: int = 0, case: str = ""):
    x = {k: torch.as_tensor(v) for k, v in problems.x0().items()}
    if case == "bad_x0" and rank == 1:
        x["w"] = x["w"] + 1.0
    return x


def _loss_fn(rank: int):
    def loss(x, X, y):
        margins = y * (X @ x["w"] + x["b"])
        data_term = torch.nn.functional.softplus(-margins).sum() / problems.N_SAMPLES
        reg = 0.5 * problems.LAM * (x["w"] ** 2).sum() if rank == 0 else 0.0
        return data_term + reg

    return loss


def run_case(case: str, X, y, rank: int, distributed) -> dict:
    """Run ``case`` on this shard; ``distributed=None`` with all the data is the reference."""
    X, y = _tensors(X, y)
    loss = _loss_fn(rank)
    kw = {} if distributed is None else {"distributed": distributed}
    x0 = _x0(rank, case)
    if case == "lbfgsb":
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", bounds={"b": (-0.2, 0.2)}, **kw)
    if case == "jac_true":
        def value_and_grad(x, X, y):
            f = loss(x, X, y)
            g = torch.autograd.grad(f, [x["w"], x["b"]])
            return f, {"w": g[0], "b": g[1]}

        return minimize(value_and_grad, x0, args=(X, y), method="BFGS", jac=True, **kw)
    if case == "jac_callable":
        def jac(x, X, y):
            x = {k: v.detach().requires_grad_() for k, v in x.items()}
            g = torch.autograd.grad(loss(x, X, y), [x["w"], x["b"]])
            return {"w": g[0], "b": g[1]}

        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", jac=jac, **kw)
    if case == "trust_krylov":
        return minimize(loss, x0, args=(X, y), method="trust-krylov", **kw)
    if case == "slsqp":
        con = {"type": "eq", "fun": lambda x: x["w"].sum() - 0.5}
        return minimize(loss, x0, args=(X, y), method="SLSQP", constraints=[con], **kw)
    if case == "nelder_mead":
        return minimize(loss, x0, args=(X, y), method="Nelder-Mead", options={"maxiter": 300}, **kw)
    if case == "callback_stop":
        seen = []

        def stop_at_three(intermediate_result):
            seen.append(intermediate_result.fun)
            if len(seen) >= 3:
                raise StopIteration

        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", callback=stop_at_three, **kw)
    if case == "raise_rank1":
        calls = []

        def flaky(x, X, y):
            calls.append(1)
            if rank == 1 and len(calls) == 4:
                raise ValueError("bad shard on rank 1")
            return loss(x, X, y)

        return minimize(flaky, x0, args=(X, y), method="L-BFGS-B", **kw)
    if case == "callback_raise":
        def broken(xk):
            raise KeyError("callback failed")

        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", callback=broken, **kw)
    if case in ("bad_x0",):
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", **kw)
    if case == "drift":  # a rank-local option: the iterates part after a few steps
        opts = {"maxcor": 2 if rank == 1 else 10}
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", options=opts, **kw)
    if case == "fd_2point":  # SciPy's finite differences: each value summed in its own all-reduce
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", jac="2-point", **kw)
    if case == "hessp_user":
        def hessp(x, p, X, y):
            x = {k: v.detach().requires_grad_() for k, v in x.items()}
            g = torch.autograd.grad(loss(x, X, y), [x["w"], x["b"]], create_graph=True)
            hv = torch.autograd.grad(g, [x["w"], x["b"]], grad_outputs=[p["w"], p["b"]])
            return {"w": hv[0], "b": hv[1]}

        return minimize(loss, x0, args=(X, y), method="Newton-CG", hessp=hessp, **kw)
    if case == "trust_constr":  # constraint Jacobian and Hessian by autodiff: rank 0's
        con = {"type": "ineq", "fun": lambda x: 0.25 - (x["w"] ** 2).sum()}
        return minimize(loss, x0, args=(X, y), method="trust-constr", constraints=[con],
                        options={"maxiter": 40}, **kw)
    if case == "rank1_dies":  # no exception to share: the others fail on gloo's lost connection
        calls = []

        def dies(x, X, y):
            calls.append(1)
            if rank == 1 and len(calls) == 3:
                os._exit(3)
            return loss(x, X, y)

        return minimize(dies, x0, args=(X, y), method="L-BFGS-B", **kw)
    if case == "stochastic":  # each rank's minibatch k; the reference's is every rank's k-th, joined
        def batches_of(Xs, ys):
            idx = np.array_split(np.arange(len(ys)), 3)
            return [(Xs[i], ys[i]) for i in idx]

        if distributed is None:
            per_rank = [batches_of(*_tensors(*problems.shard(r, 2))) for r in range(2)]
            batches = [tuple(torch.cat(parts) for parts in zip(*ks)) for ks in zip(*per_rank)]
        else:
            batches = batches_of(X, y)

        def batch_loss(x, batch):
            return loss(x, *batch)

        return minimize(batch_loss, x0, method="L-BFGS-B", batches=batches, options={"maxiter": 6}, **kw)
    if case == "max_time":
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", max_time=1e-9, **kw)
    raise ValueError(f"unknown case {case!r}")


def summary(res) -> dict:
    """What the tests compare: flat x (float64) and the counts."""
    x = np.concatenate([np.asarray(res.x[k].detach(), dtype=np.float64).ravel() for k in ("w", "b")])
    keep = {k: res.get(k) for k in ("fun", "nit", "nfev", "njev", "nhev", "success", "status", "message")}
    keep["x"] = x
    keep["history_time"] = np.asarray(res.history["time"])
    keep["distributed"] = res.get("distributed")
    return keep


def main(argv: list[str]) -> None:
    rank, size, port, out = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    cases = argv[4:]
    timeout = timedelta(seconds=5 if "rank1_dies" in cases else TIMEOUT_S)
    if "GLOO_SOCKET_IFNAME" not in os.environ and os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own sockets on 127.0.0.1 too
    store = torch.distributed.TCPStore("127.0.0.1", port, size, is_master=False,
                                       timeout=timeout)
    torch.distributed.init_process_group("gloo", store=store, rank=rank, world_size=size, timeout=timeout)
    X, y = problems.shard(rank, size)
    results = {}
    for case in cases:
        try:
            results[case] = {"result": summary(run_case(case, X, y, rank, True))}
        except Exception as exc:  # recorded for the parent test
            results[case] = {"error": type(exc).__name__, "message": str(exc),
                             "rank_attr": getattr(exc, "rank", None), "trace": traceback.format_exc()}
    with open(out, "wb") as f:
        pickle.dump(results, f)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
