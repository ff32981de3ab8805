"""``scipy.optimize.minimize`` for dicts (pytrees) of tensors.

Pick the backend for your framework and change one import line::

    from dict_minimize.torch_api import minimize       # PyTorch
    from dict_minimize.jax_api import minimize         # JAX
    from dict_minimize.tensorflow_api import minimize  # TensorFlow
    from dict_minimize.numpy_api import minimize       # NumPy (a drop-in for SciPy)

Importing this package imports no deep-learning framework.
:func:`growing_batches` makes minibatch indices for the stochastic mode.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "growing_batches"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import dict_minimize`` stays free of SciPy and optree.
    if name == "growing_batches":
        from .core.stochastic import growing_batches

        return growing_batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
