"""The JAX distributed test cases: worker processes, the one-process reference, and the sharded run.

``python distributed_jax_cases.py ranks RANK SIZE PORT OUT CASE...``: joins
``jax.distributed`` (coordinator on 127.0.0.1:PORT, gloo CPU collectives),
runs each case on this rank's shard and pickles what it returned or raised.

``python distributed_jax_cases.py sharded OUT`` (with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``): one process, the
data sharded over two devices with ``NamedSharding``, compared with the
same run on unsharded data.
"""

from __future__ import annotations

import pickle
import sys
import traceback

import numpy as np

import distributed_problems as problems

TIMEOUT_S = 60


def _setup_jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def run_case(case: str, X, y, rank: int, distributed) -> dict:
    """Run ``case`` on this shard; ``distributed=None`` with all the data is the reference."""
    import jax
    import jax.numpy as jnp

    from dict_minimize.jax_api import minimize

    kw = {} if distributed is None else {"distributed": distributed}
    x0 = {k: jnp.asarray(v) for k, v in problems.x0().items()}
    if case == "bad_x0" and rank == 1:
        x0["w"] = x0["w"] + 1.0
    reg_weight = 1.0 if rank == 0 else 0.0

    def loss(x, X, y):
        margins = y * (X @ x["w"] + x["b"])
        data_term = jnp.sum(jax.nn.softplus(-margins)) / problems.N_SAMPLES
        return data_term + reg_weight * 0.5 * problems.LAM * jnp.sum(x["w"] ** 2)

    X, y = jnp.asarray(X), jnp.asarray(y)
    if case == "lbfgsb":
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", bounds={"b": (-0.2, 0.2)}, **kw)
    if case == "jac_true":
        vg = jax.value_and_grad(loss)
        return minimize(vg, x0, args=(X, y), method="BFGS", jac=True, **kw)
    if case == "trust_krylov":
        return minimize(loss, x0, args=(X, y), method="trust-krylov", **kw)
    if case == "slsqp":
        con = {"type": "eq", "fun": lambda x: jnp.sum(x["w"]) - 0.5}
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
    if case == "trace_error_rank1":  # fails while tracing, on rank 1 only
        def bad(x, X, y):
            if rank == 1:
                raise ValueError("cannot trace on rank 1")
            return loss(x, X, y)

        return minimize(bad, x0, args=(X, y), method="L-BFGS-B", **kw)
    if case == "raise_rank1":  # eager (jac=True): fails at the 4th evaluation
        vg, calls = jax.value_and_grad(loss), []

        def flaky(x, X, y):
            calls.append(1)
            if rank == 1 and len(calls) == 4:
                raise ValueError("bad shard on rank 1")
            return vg(x, X, y)

        return minimize(flaky, x0, args=(X, y), method="L-BFGS-B", jac=True, **kw)
    if case == "max_time":
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", max_time=1e-9, **kw)
    if case == "bad_x0":
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", **kw)
    if case == "drift":
        opts = {"maxcor": 2 if rank == 1 else 10}
        return minimize(loss, x0, args=(X, y), method="L-BFGS-B", options=opts, **kw)
    raise ValueError(f"unknown case {case!r}")


def summary(res) -> dict:
    x = np.concatenate([np.asarray(res.x[k], dtype=np.float64).ravel() for k in ("w", "b")])
    keep = {k: res.get(k) for k in ("fun", "nit", "nfev", "njev", "nhev", "success", "status", "message")}
    keep["x"] = x
    keep["history_time"] = np.asarray(res.history["time"])
    keep["distributed"] = res.get("distributed")
    return keep


def ranks_main(argv: list[str]) -> None:
    rank, size, port, out = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    jax = _setup_jax()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=size, process_id=rank,
                               initialization_timeout=TIMEOUT_S, heartbeat_timeout_seconds=TIMEOUT_S)
    X, y = problems.shard(rank, size)
    results = {}
    for case in argv[4:]:
        try:
            results[case] = {"result": summary(run_case(case, X, y, rank, True))}
        except Exception as exc:
            results[case] = {"error": type(exc).__name__, "message": str(exc),
                             "rank_attr": getattr(exc, "rank", None), "trace": traceback.format_exc()}
    with open(out, "wb") as f:
        pickle.dump(results, f)
    jax.distributed.shutdown()


def sharded_main(argv: list[str]) -> None:
    jax = _setup_jax()
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from dict_minimize.jax_api import minimize

    out = argv[0]
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    X, y = problems.data()
    Xs = jax.device_put(jnp.asarray(X), NamedSharding(mesh, PartitionSpec("data", None)))
    ys = jax.device_put(jnp.asarray(y), NamedSharding(mesh, PartitionSpec("data")))

    def loss(x, X, y):
        margins = y * (X @ x["w"] + x["b"])
        data_term = jnp.sum(jax.nn.softplus(-margins)) / problems.N_SAMPLES
        return data_term + 0.5 * problems.LAM * jnp.sum(x["w"] ** 2)

    x0 = {k: jnp.asarray(v) for k, v in problems.x0().items()}
    results = {"n_devices": len(devices), "X_devices": len(Xs.sharding.device_set)}
    for name, args in (("sharded", (Xs, ys)), ("plain", (jnp.asarray(X), jnp.asarray(y)))):
        for method in ("L-BFGS-B", "trust-krylov"):
            res = minimize(loss, x0, args=args, method=method)
            results[f"{name}/{method}"] = summary(res)
    with open(out, "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    mode = sys.argv[1]
    (ranks_main if mode == "ranks" else sharded_main)(sys.argv[2:])
