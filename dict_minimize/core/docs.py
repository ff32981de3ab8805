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
    keyword arguments), ``lb_dict=``/``ub_dict=`` (0.0.x bounds spelling),
    ``history=`` (True or False: whether the result gets a ``history``;
    the default, None, records one except in SciPy's own case, a flat
    ndarray x0 in ``numpy_api``, whose result is SciPy's; without one,
    and with no callback, progress bar, time limit or batches, SciPy
    runs without a callback, at SciPy's own cost). Any other keyword is
    a ``TypeError``.

Returns
-------
scipy.optimize.OptimizeResult
    SciPy's result, with ``x`` and the objective gradient (``jac``;
    ``grad`` for trust-constr) as pytrees like x0, ``fun`` a float, and
    ``history`` (see ``history=`` above): per-iteration arrays ``nit``,
    ``fun``, ``grad_norm``, ``time``, ``nfev``, ``epoch``.

Examples
--------
{example}
"""

LEAST_SQUARES_DOC = """Solve a nonlinear least-squares problem over a pytree of {tensors}, with SciPy.

Same arguments, positional order and result as
:func:`scipy.optimize.least_squares`; ``x0`` may be one {tensor} or any
pytree of them, and ``fun`` may return residuals as one {tensor} of any
shape or a pytree of them (SciPy sees them raveled in flat order).

Parameters
----------
fun : callable
    ``fun(x, *args, **kwargs) -> residuals``; ``x`` has x0's structure,
    shapes, dtypes and device. The residuals keep one structure and shape.
x0 : {tensor} or pytree of them
    The starting point (inside the bounds). Floating dtypes only; never modified.
jac : {{None, '2-point', '3-point', 'cs', callable}}, optional
    {jac_none} Strings select SciPy's finite differences. A callable
    ``jac(x, *args, **kwargs)`` returns the dense ``(m, n)`` Jacobian over
    the flat vector (or a sparse matrix or ``LinearOperator``, or a pytree
    like x0 of ``(m, *leaf.shape)`` blocks).
bounds : pair, mapping, pytree of (lb, ub) or Bounds, optional
    SciPy's ``(lb, ub)`` (each side a scalar, an array over the flat
    vector or a pytree like x0), or any form ``minimize`` takes:
    ``{{"w": (0.0, None)}}``, a ``Bounds`` of pytrees.
method, ftol, xtol, gtol, loss, f_scale, tr_solver, tr_options, jac_sparsity, max_nfev, verbose, workers
    As in SciPy (``jac_sparsity`` is over the flat order).
x_scale, diff_step : optional
    As in SciPy; a pytree like x0 is accepted too.
args : tuple, optional
    Extra positional arguments of ``fun`` and ``jac``.
kwargs : dict, optional
    Extra keyword arguments of ``fun`` and ``jac``.
callback : callable, optional
    ``callback(intermediate_result)`` (``.x`` a pytree, ``.fun`` shaped
    like ``fun``'s return) or ``callback(x)``; ``StopIteration`` or a
    ``True`` return stops the run, as in SciPy.
**extras
    ``lb_dict=``, ``ub_dict=`` (dict_minimize 0.0.x bounds spelling).

Returns
-------
scipy.optimize.OptimizeResult
    SciPy's result with ``x`` and ``grad`` pytrees like x0, ``fun`` the
    residuals in the structure ``fun`` returns (a scalar residual as SciPy
    gives it, shape ``(1,)``), ``jac`` the ``(m, n)`` Jacobian over the flat
    order; ``cost``, ``optimality``, ``active_mask`` (flat), ``nfev``,
    ``njev``, ``status``, ``message``, ``success`` as in SciPy.

Examples
--------
{example}
"""

ROOT_DOC = """Find a root of a vector function of a pytree of {tensors}, with SciPy.

Same arguments, positional order and result as :func:`scipy.optimize.root`;
``x0`` may be one {tensor} or any pytree of them, and ``fun`` may return
one {tensor} of any shape or a pytree of them with as many elements as x0
(SciPy sees them raveled in flat order).

Parameters
----------
fun : callable
    ``fun(x, *args) -> residuals``; ``x`` has x0's structure, shapes,
    dtypes and device.
x0 : {tensor} or pytree of them
    The starting point. Floating dtypes only; never modified.
args : tuple, optional
    Extra arguments of ``fun`` and ``jac``.
method : str, optional
    Any of SciPy's methods (default ``'hybr'``).
jac : {{None, True, callable}}, optional
    {jac_none} ``True``: ``fun`` returns ``(residuals, jacobian)``. A
    callable returns the Jacobian: dense ``(n, n)`` over the flat vector or
    a pytree like x0 of ``(n, *leaf.shape)`` blocks. Only 'hybr' and 'lm'
    use a Jacobian, as in SciPy.
tol, options
    As in SciPy.
callback : callable, optional
    ``callback(x, f)`` with ``x`` a pytree and ``f`` shaped like ``fun``'s
    return (methods other than 'hybr' and 'lm', as in SciPy).

Returns
-------
scipy.optimize.OptimizeResult
    SciPy's result with ``x`` a pytree like x0 and ``fun`` in the
    structure ``fun`` returns; the method's own fields (``fjac``, ``nit``, ...)
    as SciPy gives them.

Examples
--------
{example}
"""
