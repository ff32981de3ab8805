"""PyTorch backend: gradients by autograd, tensors on any device.

The flat vector crosses to the device once per evaluation (one host copy,
then views split on the device) and comes back once (one ``torch.cat``,
one copy). float32 travels as float32 and is widened on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .core import Backend, Layout, bind, bind_least_squares, bind_root
from .core.backend import NotConnected, refuse_complex
from .core.distributed import DISTRIBUTED_DOC, Communicator, with_distributed

__all__ = ["load_parameters", "minimize", "least_squares", "root", "parameters"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class _Info:
    device: torch.device | None  # None: leaves live on several devices
    devices: tuple  # each leaf's device
    transfer: torch.dtype  # dtype of the flat buffer on the device
    uniform: bool  # every leaf has the transfer dtype


def _flat_output(c: Any) -> torch.Tensor:
    """A constraint's value as one 1-d tensor, keeping autograd.

    A tensor is raveled; a (nested) list or tuple holding tensors is the
    concatenation of its raveled items (numbers among them become tensors
    of the items' dtype); anything else is read as an array.
    """
    if isinstance(c, torch.Tensor):
        return c.reshape(-1)
    if isinstance(c, (list, tuple)) and _holds_tensor(c):
        parts = [_flat_output(v) if isinstance(v, (torch.Tensor, list, tuple)) else v for v in c]
        tensors = [t for t in parts if isinstance(t, torch.Tensor)]
        dtype, device = tensors[0].dtype, tensors[0].device
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        parts = [t.to(dtype) if isinstance(t, torch.Tensor)
                 else torch.tensor([float(t)], dtype=dtype, device=device) for t in parts]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)
    return torch.as_tensor(np.asarray(c, dtype=np.float64)).reshape(-1)


def _holds_tensor(seq: Any) -> bool:
    return any(isinstance(v, torch.Tensor) or (isinstance(v, (list, tuple)) and _holds_tensor(v))
               for v in seq)


class TorchBackend(Backend):
    """Leaves are ``torch.Tensor`` (Parameters too); NumPy arrays and floats become tensors."""

    def leaf_shape_dtype(self, leaf: Any, path: str):
        if isinstance(leaf, torch.Tensor):
            if leaf.dtype not in _FLOATS:
                raise TypeError(
                    f"{path} has dtype {leaf.dtype}; only floating dtypes "
                    "(float16, bfloat16, float32, float64) can be optimized"
                )
            return tuple(leaf.shape), leaf.dtype
        if isinstance(leaf, float):
            return (), torch.float64
        if isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind == "f":
            return leaf.shape, torch.from_numpy(np.zeros(0, leaf.dtype)).dtype
        kind = getattr(leaf, "dtype", type(leaf).__name__)
        raise TypeError(
            f"{path} is {kind}; x0's leaves must be floating torch tensors, NumPy arrays or floats"
        )

    def layout_info(self, leaves, dtypes) -> _Info:
        devices = tuple(v.device if isinstance(v, torch.Tensor) else None for v in leaves)
        known = {d for d in devices if d is not None}
        home = known.pop() if len(known) == 1 else (torch.device("cpu") if not known else None)
        devices = tuple(home if d is None else d for d in devices)
        transfer = torch.float64 if torch.float64 in dtypes else torch.float32
        return _Info(home, devices, transfer, all(d == transfer for d in dtypes))

    # ---- conversions ------------------------------------------------------

    def _tensor(self, leaf: Any, device) -> torch.Tensor:
        if isinstance(leaf, torch.Tensor):
            return leaf.detach()
        return torch.as_tensor(np.asarray(leaf), device=device)

    def to_flat(self, leaves: list, layout: Layout) -> np.ndarray:
        info: _Info = layout.info
        if info.device is None:
            # Several devices: gather on the host, one tensor at a time.
            parts = [self._tensor(v, d).reshape(-1).cpu() for v, d in zip(leaves, info.devices)]
        else:
            parts = [self._tensor(v, info.device).reshape(-1) for v in leaves]
        flat = parts[0] if len(parts) == 1 else torch.cat(parts)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.to(torch.float32)  # NumPy has no bfloat16
        # One device->host copy; float32 is widened on the host.
        return flat.cpu().numpy().astype(np.float64)

    def _buffer(self, x: np.ndarray, info: _Info, device) -> torch.Tensor:
        refuse_complex(x, "torch")  # every flat vector SciPy hands over comes through here
        if info.transfer == torch.float32:
            host = np.asarray(x, dtype=np.float32)  # a new array: never aliases x
        else:
            host = np.array(x, dtype=np.float64, copy=True)
        return torch.from_numpy(host).to(device)

    def _views(self, buf: torch.Tensor, layout: Layout) -> list:
        info: _Info = layout.info
        pieces = torch.split(buf, layout.sizes)
        # A view whose shape already matches would add an autograd node per
        # leaf, forward and backward: skip it.
        pieces = [p if p.dim() == len(s) == 1 else p.view(s) for p, s in zip(pieces, layout.shapes)]
        if info.uniform:
            return pieces
        return [p.to(d) for p, d in zip(pieces, layout.dtypes)]

    def from_flat(self, x: np.ndarray, layout: Layout, requires_grad: bool = False) -> list:
        info: _Info = layout.info
        if info.device is not None:
            leaves = self._views(self._buffer(x, info, info.device), layout)
        else:
            leaves = [
                self._buffer(piece.reshape(-1), info, dev).view(shape).to(dt)
                for piece, dev, shape, dt in zip(layout.split(x), info.devices, layout.shapes, layout.dtypes)
            ]
        if requires_grad:
            # Leaf tensors, as dict_minimize 0.0.x handed to jac=True functions.
            leaves = [v.detach().requires_grad_() for v in leaves]
        return leaves

    def to_numpy(self, obj: Any) -> np.ndarray:
        if isinstance(obj, torch.Tensor):
            obj = obj.detach()
            if obj.dtype in (torch.float16, torch.bfloat16):
                obj = obj.float()
            return obj.cpu().numpy()
        if isinstance(obj, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in obj):
            return np.asarray([self.to_numpy(v) for v in obj])
        return np.asarray(obj)

    # ---- derivatives ------------------------------------------------------

    @staticmethod
    def _scalar_tensor(value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                "fun must return a torch scalar that depends on x through autograd; "
                f"it returned {type(value).__name__} (did it call .item() or float()?)"
            )
        if value.numel() != 1:
            raise ValueError(
                f"fun must return a scalar; it returned a tensor of shape {tuple(value.shape)}"
            )
        return value.reshape(())

    def _tracked(self, x: np.ndarray, layout: Layout) -> tuple[list, list]:
        """(inputs, leaves): tensors autograd differentiates against, and x0-shaped leaves."""
        info: _Info = layout.info
        if info.device is not None:
            buf = self._buffer(x, info, info.device).requires_grad_()
            return [buf], self._views(buf, layout)
        leaves = self.from_flat(x, layout, requires_grad=True)
        return leaves, leaves

    def _like_inputs(self, p: np.ndarray, layout: Layout) -> list:
        info: _Info = layout.info
        if info.device is not None:
            return [self._buffer(p, info, info.device)]
        return self.from_flat(p, layout)

    def _inputs_to_flat(self, grads: list, layout: Layout) -> np.ndarray:
        if layout.info.device is not None:
            (g,) = grads
            g = g.detach()
            if g.dtype != torch.float64:
                g = g.float()
            return g.cpu().numpy().astype(np.float64, copy=False)  # one copy, widened on the host
        return self.to_flat(grads, layout)

    def _value(self, fun: Callable, layout: Layout, leaves: list, args: tuple) -> torch.Tensor:
        value = self._scalar_tensor(fun(layout.unflatten(leaves), *args))
        if not value.requires_grad:
            raise ValueError(
                "fun's value does not depend on x through autograd "
                "(was it computed under torch.no_grad() or from .detach()/.item()?)"
            )
        return value

    def value_and_grad(self, fun: Callable, layout: Layout):
        def value_and_grad(x: np.ndarray, args: tuple):
            with torch.enable_grad():
                inputs, leaves = self._tracked(x, layout)
                value = self._value(fun, layout, leaves, args)
                grads = torch.autograd.grad(value, inputs, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
            return float(value.detach()), self._inputs_to_flat(grads, layout)

        return value_and_grad

    def linearize_grad(self, fun: Callable, layout: Layout):
        # The gradient's graph is built once per x and kept; each product is
        # then one backward pass through it (measured as fast per product as
        # torch.func.linearize, at a fraction of its set-up cost).
        def linearize(x: np.ndarray, args: tuple):
            with torch.enable_grad():
                inputs, leaves = self._tracked(x, layout)
                value = self._value(fun, layout, leaves, args)
                grads = torch.autograd.grad(value, inputs, create_graph=True, allow_unused=True)
            live = [(t, g) for t, g in zip(inputs, grads) if g is not None and g.requires_grad]

            def hvp(p: np.ndarray) -> np.ndarray:
                if not live:  # the gradient is constant: a zero Hessian
                    return np.zeros(layout.n)
                tangents = self._like_inputs(p, layout)
                by_input = dict(zip(map(id, inputs), tangents))
                with torch.enable_grad():
                    out = torch.autograd.grad(
                        [g for _, g in live], inputs,
                        grad_outputs=[by_input[id(t)].to(g.dtype) for t, g in live],
                        retain_graph=True, allow_unused=True,
                    )
                out = [torch.zeros_like(t) if h is None else h for t, h in zip(inputs, out)]
                return self._inputs_to_flat(out, layout)

            return hvp

        return linearize

    def value_and_jac(self, fun: Callable, layout: Layout):
        def value_and_jac(x: np.ndarray, args: tuple):
            with torch.enable_grad():
                inputs, leaves = self._tracked(x, layout)
                c = _flat_output(fun(layout.unflatten(leaves), *args))
                m = c.numel()
                c_host = self.to_numpy(c).astype(np.float64)
                if m == 0:
                    return c_host, np.zeros((0, layout.n))
                if not c.requires_grad:
                    raise NotConnected(
                        "the constraint's value does not depend on x through autograd (was it a Python "
                        "float, or computed with .item(), float(), NumPy or under torch.no_grad()?)"
                    )
                if m <= layout.n:
                    # Reverse mode: m vector-Jacobian products, batched with vmap.
                    eye = torch.eye(m, dtype=c.dtype, device=c.device)
                    rows = torch.autograd.grad(c, inputs, grad_outputs=eye, is_grads_batched=True,
                                               allow_unused=True)
                    blocks = [torch.zeros((m,) + t.shape, dtype=t.dtype, device=t.device) if r is None else r
                              for t, r in zip(inputs, rows)]
                    jac = np.concatenate([self.to_numpy(b).reshape(m, -1) for b in blocks], axis=1)
                    return c_host, jac.astype(np.float64)
            # Forward mode: n Jacobian-vector products, when the outputs outnumber the inputs.
            def flat_fun(*flat_inputs):
                views = self._views(flat_inputs[0], layout) if layout.info.device is not None else list(flat_inputs)
                return _flat_output(fun(layout.unflatten(views), *args))

            detached = [t.detach() for t in inputs]
            jacs = torch.func.jacfwd(flat_fun, argnums=tuple(range(len(detached))))(*detached)
            jac = np.concatenate([self.to_numpy(j).reshape(m, -1) for j in jacs], axis=1)
            return c_host, jac.astype(np.float64)

        return value_and_jac

    def vdot(self, v: np.ndarray, c: Any) -> torch.Tensor:
        c = torch.as_tensor(c)
        return (torch.as_tensor(np.asarray(v), dtype=c.dtype, device=c.device) * c.reshape(-1)).sum()

    def ravel_concat(self, tensors: list) -> torch.Tensor:
        first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
        device = first.device if first is not None else None
        return torch.cat([torch.as_tensor(t, device=device).reshape(-1) for t in tensors])


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``module`` as a dict of detached copies: an ``x0``.

    Buffers and parameters with ``requires_grad=False`` are left out.

    Parameters
    ----------
    module : torch.nn.Module
        The model.

    Returns
    -------
    dict of str to torch.Tensor
        ``named_parameters()`` order; copies, so optimizing never touches the model.

    Examples
    --------
    >>> import torch
    >>> from dict_minimize.torch_api import minimize, parameters, load_parameters
    >>> model = torch.nn.Linear(3, 1)
    >>> X, y = torch.randn(20, 3), torch.randn(20, 1)
    >>> def loss(params):
    ...     pred = torch.func.functional_call(model, params, (X,))
    ...     return ((pred - y) ** 2).mean()
    >>> res = minimize(loss, parameters(model), method="L-BFGS-B")
    >>> load_parameters(model, res.x)
    >>> bool(torch.allclose(model.weight, res.x["weight"]))
    True
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_parameters(module: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Write ``params`` (e.g. ``res.x``) into ``module``'s parameters, in place.

    Only the named parameters change; buffers and other parameters are left alone.

    Parameters
    ----------
    module : torch.nn.Module
        The model to update.
    params : dict of str to torch.Tensor
        Values keyed by ``named_parameters()`` names, shapes matching.

    Examples
    --------
    See :func:`parameters`.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter names to tensors, got {type(params).__name__}")
    named = dict(module.named_parameters())
    for name, value in params.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"params[{name!r}] must be a torch.Tensor, got {type(value).__name__}")
        if name not in named:
            raise ValueError(f"params has {name!r}, which is not a parameter of the module")
        if tuple(value.shape) != tuple(named[name].shape):
            raise ValueError(
                f"params[{name!r}] has shape {tuple(value.shape)}; the module's has {tuple(named[name].shape)}"
            )
    with torch.no_grad():
        for name, value in params.items():
            named[name].copy_(value)


class TorchCommunicator(Communicator):
    """Sum all-reduce over a ``torch.distributed`` process group.

    Gloo reduces a CPU tensor; NCCL a tensor on this process's current CUDA
    device. A rank that never joins makes the others fail after the group's
    timeout (``init_process_group(timeout=...)``), never hang for ever.
    """

    def __init__(self, distributed: Any):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed= needs an initialized torch.distributed process group: call "
                "torch.distributed.init_process_group(...) first (torchrun sets up its environment)"
            )
        if distributed is True:
            group = None
        elif isinstance(distributed, dist.ProcessGroup):
            group = distributed
        else:
            raise TypeError(
                "distributed must be None, True or a torch.distributed.ProcessGroup, "
                f"got {type(distributed).__name__}"
            )
        self._dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        nccl = str(dist.get_backend(group)).lower() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.array(buf, dtype=np.float64)).to(self.device)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        return t.cpu().numpy()


_BACKEND = TorchBackend()


minimize = with_distributed(bind(
    _BACKEND,
    __name__,
    tensors="PyTorch tensors",
    tensor="torch.Tensor",
    jac_none="``None``: the gradient by autograd, value and gradient in one pass.",
    hess_none="``None``: Hessian-vector products by autodiff where the method uses them.",
    cons_none="Without ``jac``, Jacobians by autograd.",
    example="""    >>> import torch
    >>> from dict_minimize.torch_api import minimize
    >>> def rosen(x):
    ...     a, b = x["a"], x["b"]
    ...     return (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum()
    >>> x0 = {"a": torch.full((3,), -1.0), "b": torch.full((3,), 2.0)}
    >>> res = minimize(rosen, x0, method="L-BFGS-B", bounds={"b": (None, 5.0)})
    >>> res.x["a"].dtype, bool(torch.allclose(res.x["a"], torch.ones(3), atol=1e-3))
    (torch.float32, True)""",
), _BACKEND, TorchCommunicator, DISTRIBUTED_DOC.format(
    kinds=" or a torch.distributed.ProcessGroup",
    true="the default ``torch.distributed`` process group (``True``) or the group given",
    engine="gloo (CPU) or NCCL (a tensor on the current CUDA device)",
))


least_squares = bind_least_squares(
    _BACKEND,
    __name__,
    jac_default=None,
    tensors="PyTorch tensors",
    tensor="torch.Tensor",
    jac_none="``None`` (the default): the dense Jacobian by autograd "
    "(forward mode when there are more residuals than variables).",
    example="""    >>> import torch
    >>> from dict_minimize.torch_api import least_squares
    >>> t = torch.linspace(0.0, 1.0, 20, dtype=torch.float64)
    >>> y = 2.0 * torch.exp(-1.5 * t)
    >>> def residuals(p):
    ...     return p["a"] * torch.exp(-p["k"] * t) - y
    >>> x0 = {"a": torch.tensor(1.0, dtype=torch.float64), "k": torch.tensor(1.0, dtype=torch.float64)}
    >>> res = least_squares(residuals, x0)
    >>> round(float(res.x["a"]), 4), round(float(res.x["k"]), 4), res.jac.shape
    (2.0, 1.5, (20, 2))""",
)

root = bind_root(
    _BACKEND,
    __name__,
    tensors="PyTorch tensors",
    tensor="torch.Tensor",
    jac_none="``None``: the dense Jacobian by autograd (for 'hybr' and 'lm').",
    example="""    >>> import torch
    >>> from dict_minimize.torch_api import root
    >>> def equations(x):
    ...     return {"cube": x["a"] ** 3 - 8.0, "equal": x["b"] - x["a"]}
    >>> x0 = {"a": torch.tensor(1.0, dtype=torch.float64), "b": torch.tensor(0.0, dtype=torch.float64)}
    >>> res = root(equations, x0)
    >>> round(float(res.x["a"]), 4), round(float(res.x["b"]), 4)
    (2.0, 2.0)""",
)


# ---- argmin: the solution as a differentiable function of args ----------


class _Implicit(torch.autograd.Function):
    """``argmin``'s solve as one autograd node; its backward is the implicit function theorem's."""

    @staticmethod
    def forward(ctx, rule, *inputs):
        forward, backward = rule
        ctx.backward_rule = backward
        ctx.like = [(t.dtype, t.device, t.shape) for t in inputs]
        return tuple(t.detach() for t in forward(list(inputs)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *cotangents):
        grads = ctx.backward_rule([_BACKEND.to_numpy(c).astype(np.float64) for c in cotangents],
                                  list(ctx.needs_input_grad[1:]))
        out = [None if g is None else torch.as_tensor(np.asarray(g), dtype=dt, device=dev).reshape(shape)
               for g, (dt, dev, shape) in zip(grads, ctx.like)]
        return (None, *out)


class _ArgminBackend(TorchBackend):
    """The backend with argmin's two hooks: parameters are float tensors that require grad."""

    def is_parameter(self, leaf: Any) -> bool:
        return isinstance(leaf, torch.Tensor) and leaf.dtype in _FLOATS and leaf.requires_grad

    def implicit_function(self, forward, backward):
        def apply(inputs: list) -> list:
            if not inputs:
                return forward([])  # nothing to differentiate: no autograd node
            return list(_Implicit.apply((forward, backward), *inputs))

        return apply


from .core.implicit import bind_argmin  # noqa: E402

__all__.append("argmin")
argmin = bind_argmin(
    _ArgminBackend(),
    __name__,
    tensors="PyTorch tensors",
    tensor="torch.Tensor that requires grad",
    how="through one ``torch.autograd.Function`` node",
    example="""    >>> import torch
    >>> from dict_minimize.torch_api import argmin
    >>> y = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    >>> def f(x, y):  # relu(y) = argmin ||x||^2 - 2 y'x subject to x >= 0
    ...     return (x["x"] ** 2).sum() - 2 * (y * x["x"]).sum()
    >>> x = argmin(f, {"x": torch.ones(3, dtype=torch.float64)}, args=(y,), bounds={"x": (0.0, None)})
    >>> x["x"].sum().backward()
    >>> y.grad
    tensor([1., 0., 1.], dtype=torch.float64)""",
)
