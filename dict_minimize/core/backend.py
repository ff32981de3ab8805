"""The small protocol every framework backend implements.

A backend knows how to turn its framework's leaves into one flat float64
NumPy vector and back, and how to get derivatives from its autodiff. The
driver in :mod:`dict_minimize.core.driver` knows SciPy and nothing of any
framework. A derivative hook that returns ``None`` means "this backend has
no autodiff for it": the driver then leaves the derivative to SciPy.

Functions handed to the derivative hooks take ``(tree, *args)`` where
``tree`` has x0's structure; the hooks return functions of the flat
float64 vector ``x`` and the argument tuple ``args``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np

from .tree import Layout

FLOAT_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")

#: ``value_and_grad(x, args) -> (float, grad)``
ValueAndGrad = Callable[[np.ndarray, tuple], "tuple[float, np.ndarray]"]
#: ``linearize(x, args) -> hvp`` where ``hvp(p) -> H @ p``
Linearize = Callable[[np.ndarray, tuple], Callable[[np.ndarray], np.ndarray]]
#: ``value_and_jac(x, args) -> (c (m,), J (m, n))``
ValueAndJac = Callable[[np.ndarray, tuple], "tuple[np.ndarray, np.ndarray]"]


class NotConnected(ValueError):
    """A function's value does not depend on x through the framework's autodiff.

    Backends raise it from the derivative hooks; the core adds which
    function it was (``constraints[i]``) where the backend cannot know.
    """


def refuse_complex(x: np.ndarray, backend: str) -> None:
    """``ValueError`` when SciPy hands a backend without complex leaves a complex ``x``.

    SciPy's complex-step differences (``'cs'`` as ``jac``, ``hess`` or a
    constraint's ``jac``) evaluate at complex points; casting them to real
    would make every difference zero, a silent wrong gradient.
    """
    if np.iscomplexobj(x):
        raise ValueError(
            f"jac='cs' (complex-step differences, also as hess='cs' or a constraint's jac='cs') is not "
            f"supported by the {backend} backend: its leaves are real tensors, so the complex step "
            "would be dropped and the derivative read as zero; leave jac/hess unset (autodiff) "
            "or use '2-point'/'3-point'"
        )


class NotScalarError(ValueError, TypeError):
    """The objective returned more than one value.

    SciPy raises ``ValueError`` for this in most methods and COBYQA raises
    ``TypeError``: this is both, so drop-in users catch what they caught.
    """


class Backend(abc.ABC):
    """Base class of the framework backends; the defaults are NumPy's.

    Subclasses override the conversions and, where the framework has
    autodiff, the derivative hooks.
    """

    #: A drop-in for SciPy with a flat 1-d x0: results keep SciPy's meaning
    #: exactly where dict_minimize would otherwise improve on them (a run
    #: ending on NaN keeps ``fun=nan`` and adds ``best_x``/``best_fun``).
    scipy_dropin = False

    # ---- leaves -----------------------------------------------------------

    def is_leaf(self, obj: Any) -> bool:
        """Extra leaf predicate for flattening (framework objects optree would open)."""
        return False

    @abc.abstractmethod
    def leaf_shape_dtype(self, leaf: Any, path: str) -> tuple[tuple[int, ...], Any]:
        """Shape and dtype of one leaf of x0; ``TypeError`` for a non-float leaf."""

    def prepare_x0(self, x0: Any) -> Any:
        """x0 as this backend reads it (NumPy turns a list of numbers into one array)."""
        return x0

    def layout_info(self, leaves: list, dtypes: tuple) -> Any:
        """Backend data stored on the layout (device, transfer dtype)."""
        return None

    # ---- conversions ------------------------------------------------------

    @abc.abstractmethod
    def to_flat(self, leaves: list, layout: Layout) -> np.ndarray:
        """Concatenate ``leaves`` (x0-shaped) into one new float64 vector."""

    @abc.abstractmethod
    def from_flat(self, x: np.ndarray, layout: Layout, requires_grad: bool = False) -> list:
        """New framework leaves (x0's dtypes and device) holding ``x``; never aliases ``x``.

        ``requires_grad`` asks for leaves the user's own code can
        differentiate (``jac=True`` in PyTorch); other frameworks ignore it.
        """

    def to_numpy(self, obj: Any) -> np.ndarray:
        """Any tensor-like (framework tensor, array, float) as a NumPy array."""
        return np.asarray(obj)

    def to_scalar(self, value: Any) -> float:
        """The objective's value as a Python float; ``ValueError`` if not one element."""
        if type(value) in (float, np.float64, np.float32):  # the common case, without conversions
            return float(value)
        arr = self.to_numpy(value)
        if arr.size != 1:
            raise NotScalarError(
                "The user-provided objective function must return a scalar value. "
                f"fun returned shape {tuple(arr.shape)}; it must be a float or a tensor with one element."
            )
        if np.iscomplexobj(arr):  # SciPy's complex-step differences ('cs')
            return complex(arr.reshape(()))
        return float(arr.reshape(()))

    # ---- derivatives (None: not available, SciPy takes over) --------------

    def value(self, fun: Callable, layout: Layout) -> Callable[[np.ndarray, tuple], float] | None:
        """The value alone, compiled where the framework compiles (gradient-free methods).

        ``None``: the driver calls ``fun`` eagerly on :meth:`from_flat` leaves.
        """
        return None

    def value_and_grad(self, fun: Callable, layout: Layout) -> ValueAndGrad | None:
        """Value and flat gradient of ``fun`` in one autodiff pass."""
        return None

    def linearize_grad(self, fun: Callable, layout: Layout) -> Linearize | None:
        """Hessian-vector products of the scalar ``fun`` by autodiff.

        Returns ``linearize(x, args) -> hvp`` with ``hvp(p) = H(x) @ p`` (flat
        float64 in and out). SciPy asks for many products at one ``x``: what
        can be reused between them (a retained graph, a compiled
        jvp-of-grad) is built once in ``linearize``.
        """
        return None

    def value_and_jac(self, fun: Callable, layout: Layout) -> ValueAndJac | None:
        """Value ``c`` (raveled, ``(m,)``) and dense Jacobian ``(m, n)`` of a tensor-valued ``fun``.

        Reverse mode (m vector-Jacobian products) or forward mode (n
        Jacobian-vector products), whichever is cheaper for the shape.
        """
        return None

    def vdot(self, v: np.ndarray, c: Any) -> Any:
        """``sum(v * ravel(c))`` in the framework, differentiable in ``c``.

        With :meth:`linearize_grad` it gives the constraint Hessians
        ``hess(x, v)`` that trust-constr asks for.
        """
        return np.dot(np.asarray(v, dtype=np.float64), np.ravel(self.to_numpy(c)))

    def ravel_concat(self, tensors: list) -> Any:
        """The tensors raveled (C order) and joined into one 1-d tensor, in the framework.

        Differentiable where the framework differentiates: ``least_squares``
        and ``root`` join a pytree of residuals with it before taking the Jacobian.
        """
        return np.concatenate([np.ravel(self.to_numpy(t)) for t in tensors])

    # ---- argmin: differentiating the solution (None: no autodiff) ---------

    def is_parameter(self, leaf: Any) -> bool:
        """Whether a leaf of ``args``, of a constraint's ``args`` or of ``bounds`` carries gradients into ``argmin``."""
        return False

    def implicit_function(
        self, forward: Callable[[list], list], backward: Callable[[list], list]
    ) -> Callable[[list], list] | None:
        """``forward`` as one operation of this framework's reverse mode, with ``backward`` as its rule.

        ``apply(inputs) -> outputs``: ``forward(values)`` gets the inputs'
        values (framework tensors, not being differentiated) and returns the
        output leaves; ``backward(cotangents, wanted=None)`` gets one NumPy
        array per output (and optionally which inputs the framework needs a
        gradient for) and returns, per input, a NumPy array shaped like it
        or ``None`` (no gradient). ``None``: this backend has no ``argmin``.
        """
        return None
