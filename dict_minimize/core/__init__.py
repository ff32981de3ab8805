"""Framework-agnostic machinery: the only code that knows SciPy."""

from .backend import Backend
from .driver import minimize
from .tree import Layout

__all__ = ["Backend", "Layout", "minimize"]
