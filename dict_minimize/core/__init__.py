"""Framework-agnostic machinery: the only code that knows SciPy."""

from .backend import Backend
from .driver import bind, minimize
from .tree import Layout

__all__ = ["Backend", "Layout", "bind", "minimize"]
