"""``scipy.optimize.minimize`` for dicts (pytrees) of tensors.

Pick the backend for your framework and change one import line::

    from dict_minimize.torch_api import minimize       # PyTorch
    from dict_minimize.jax_api import minimize         # JAX
    from dict_minimize.tensorflow_api import minimize  # TensorFlow
    from dict_minimize.numpy_api import minimize       # NumPy (a drop-in for SciPy)

Importing this package imports no deep-learning framework.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
