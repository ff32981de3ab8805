"""The flat layout across devices, on two real (host) devices.

JAX can make several CPU devices in one process
(``--xla_force_host_platform_device_count``), a flag read when JAX starts:
so the checks run in a subprocess that sets it, and they first check that
the leaves really do span two devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from dict_minimize.core.driver import build_layout
    from dict_minimize.jax_api import minimize
    from dict_minimize.jax_api import JaxBackend

    be = JaxBackend()
    d0, d1 = jax.devices()[:2]
    mesh = jax.sharding.Mesh(np.array([d0, d1]), ("i",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("i"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    x0 = {
        "s": jax.device_put(jnp.arange(6.0, dtype=jnp.float32).reshape(6, 1), sharded),  # both devices
        "d1": jax.device_put(jnp.array([10.0, 11.0, 12.0]), d1),                          # device 1 only
        "host": np.array([[20.0, 21.0]]),                                                 # uncommitted
        "r": jax.device_put(jnp.array(30.0), replicated),                                 # a copy on each
    }
    layout, leaves = build_layout(be, x0)
    flat = be.to_flat(leaves, layout)
    x = flat + 0.5
    back = dict(zip(x0, be.from_flat(x, layout)))
    out = {
        "devices": len(jax.devices()),
        "spans": {k: len(v.sharding.device_set) for k, v in x0.items() if hasattr(v, "sharding")},
        "flat": flat.tolist(),
        "back": {k: np.asarray(v).astype(np.float64).ravel().tolist() for k, v in back.items()},
        "same_sharding": {k: back[k].sharding == x0[k].sharding for k in ("s", "d1", "r")},
        "dtypes": {k: str(v.dtype) for k, v in back.items()},
        "shapes": {k: list(v.shape) for k, v in back.items()},
    }
    # minimize over the leaves JAX can compute with together (not "d1", committed to one device
    # beside a mesh): the gradient comes back from both devices, right.
    x0.pop("d1")
    target = {"s": 3.0, "host": 2.0, "r": -1.0}
    fun = lambda p: sum(jnp.sum((p[k] - t) ** 2) for k, t in target.items())
    res = minimize(fun, x0, method="L-BFGS-B")
    out["minimize"] = {
        "success": bool(res.success),
        "error": max(float(jnp.max(jnp.abs(res.x[k] - t))) for k, t in target.items()),
        "same_sharding": {k: res.x[k].sharding == x0[k].sharding for k in ("s", "r")},
    }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_devices():
    # The checkout these tests belong to first (a copy under benchmarks/mutation_check.py too).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_the_leaves_really_span_two_devices(two_devices):
    assert two_devices["devices"] == 2
    assert two_devices["spans"] == {"s": 2, "d1": 1, "r": 2}


def test_to_flat_is_x0_in_flat_order(two_devices):
    assert two_devices["flat"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 20.0, 21.0, 30.0]


def test_from_flat_puts_each_leaf_back_where_it_was(two_devices):
    back = two_devices["back"]
    assert back["s"] == [v + 0.5 for v in range(6)]
    assert back["d1"] == [10.5, 11.5, 12.5]
    assert back["host"] == [20.5, 21.5]
    assert back["r"] == [30.5]
    assert two_devices["same_sharding"] == {"s": True, "d1": True, "r": True}
    assert two_devices["dtypes"] == {"s": "float32", "d1": "float64", "host": "float64", "r": "float64"}
    assert two_devices["shapes"] == {"s": [6, 1], "d1": [3], "host": [1, 2], "r": []}


def test_minimize_over_two_devices(two_devices):
    run = two_devices["minimize"]
    assert run["success"] and run["error"] < 1e-5
    assert run["same_sharding"] == {"s": True, "r": True}
