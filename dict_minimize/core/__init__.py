"""Framework-agnostic machinery: the only code that knows SciPy."""

from .backend import Backend
from .driver import bind, minimize
from .equations import bind_least_squares, bind_root
from .problem import Problem
from .tree import Layout

__all__ = ["Backend", "Layout", "Problem", "bind", "bind_least_squares", "bind_root", "minimize"]
