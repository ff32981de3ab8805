"""The one docstring of every backend's ``minimize``, filled in per framework."""

MINIMIZE_DOC = """Minimize a scalar function of a pytree of {tensors}, with SciPy.

Same arguments, positional order and result as
:func:`scipy.optimize.minimize`; ``x0`` may be one {tensor} or any pytree
of them (dict, OrderedDict, list, tuple, namedtuple, nested).

Parameters
----------
fun : callable
    ``fun(x, *args) -> scalar``; ``x`` has x0's structure, shapes, dtypes
    and device. In the stochastic mode, ``fun(x, batch, *args)``.
x0 : {tensor} or pytree of them
    The starting point. Floating dtypes only; never modified.
args : tuple, optional
    Extra arguments passed to ``fun``, ``jac``, ``hess`` and ``hessp``.
method : str or callable, optional
    Any of SciPy's methods; SciPy's default choice when None.
jac : {{None, True, callable, '2-point', '3-point', 'cs'}}, optional
    {jac_none} ``True``: ``fun`` returns ``(value, gradient_pytree)``. A
    callable returns the gradient pytree. Strings go to SciPy.
hess, hessp : callable or HessianUpdateStrategy, optional
    {hess_none} User callables take and return pytrees (``hessp(x, p)``);
    a dense ``hess`` matrix is over the flat vector.
bounds : mapping, pytree of (lb, ub), Bounds or SciPy's flat forms, optional
    Per key: ``{{"w": (0.0, 1.0)}}``; missing keys are unbounded; each side
    is None, a scalar or an array broadcastable to the parameter.
constraints : dict, NonlinearConstraint, LinearConstraint or a sequence
    Constraint functions take the pytree and return a tensor of any shape.
    {cons_none} ``LinearConstraint`` matrices are over the flat vector.
tol : float, optional
    As in SciPy.
callback : callable, optional
    ``callback(intermediate_result)`` (``.x`` is a pytree) or legacy
    ``callback(xk)``; raising ``StopIteration`` stops cleanly.
options : dict, optional
    SciPy's options for the method.
**extras
    Keyword-only extras: ``batches=`` (stochastic mode: any iterable of
    minibatches; :func:`dict_minimize.growing_batches` makes batches that
    grow to the full set, which L-BFGS-B needs to converge), ``epochs=``,
    ``max_time=`` (seconds), ``progress=`` (a tqdm bar; True or tqdm
    keyword arguments), ``lb_dict=``/``ub_dict=`` (0.0.x bounds spelling).
    Any other keyword is a ``TypeError``.

Returns
-------
scipy.optimize.OptimizeResult
    SciPy's result, with ``x`` and the objective gradient (``jac``;
    ``grad`` for trust-constr) as pytrees like x0, ``fun`` a float, and
    ``history``: per-iteration arrays ``nit``, ``fun``, ``grad_norm``,
    ``time``, ``nfev``, ``epoch``.

Examples
--------
{example}
"""
