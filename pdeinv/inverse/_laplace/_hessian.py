"""The data-misfit Hessian as products: Gauss–Newton by forward mode, or differences."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._prior import _x64

# -- the misfit Hessian ------------------------------------------------------------------


class MisfitHessian(NamedTuple):
    """``apply(V) = H_mis V`` for a block ``V`` of shape ``(n, b)`` (float64 numpy in/out)."""

    apply: Callable[[np.ndarray], np.ndarray]
    gradient: Callable[[], np.ndarray]  # misfit gradient at the linearisation point, (n,)
    misfit: Callable[[], float]  # data misfit at the linearisation point
    # "gauss-newton" (the problem's own product), "finite-difference-jvp" (its fallback)
    # or "gradient-difference" (the fit's own gradient, differenced)
    kind: str
    counter: list  # [number of Hessian-vector products so far]


HESSIANS = ("gauss-newton", "gradient-difference")


def misfit_hessian(
    problem, m, *, batch_size: int | None = None, fd_step=None, hessian: str = "gauss-newton"
) -> MisfitHessian:
    r"""Misfit Hessian at ``m`` as products: Gauss–Newton, or the gradient's difference.

    ``hessian="gauss-newton"`` (default): :math:`J^T\Gamma_{noise}^{-1}J`, as below.
    ``hessian="gradient-difference"``: the misfit's full Hessian
    :math:`\nabla^2\Phi`, as the central difference of its gradient,
    :math:`(\nabla\Phi(m + \epsilon v) - \nabla\Phi(m - \epsilon v))/2\epsilon`, each
    gradient by the program the fit compiled (the problem's objective at weight 0),
    so nothing is compiled; one vector at a time, two gradients per product.  It
    equals Gauss–Newton for a linear model and differs from it by the residual's
    curvature :math:`\sum_i r_i\nabla^2 r_i` otherwise (small at a MAP point that
    fits the data to the noise; its negative eigenvalues, if any, are dropped).

    Uses the problem's own linearisation (``problem.gauss_newton_operator(m)``,
    :math:`J` by forward mode through the solver) when forward mode is available.
    Otherwise :math:`Jv` is a central difference of the residual
    :math:`r = (f(m) - d)/\sigma` along ``v`` (exact for a model linear in ``m``,
    such as the initial-condition unknowns) and :math:`J^T(Jv)` is one reverse pass
    (the gradient of :math:`\langle r(m), Jv\rangle`).  Products are computed ``batch_size``
    at a time by one compiled function (blocks are padded to that width, so it
    compiles once).

    Parameters
    ----------
    problem
        The inverse problem.
    m
        Linearisation point, ``(n,)``.
    batch_size
        Products computed at once (``vmap``); ``None``: 1.
    fd_step
        Relative step of the central difference; default the cube root of the
        solver tolerance (or of the precision's resolution, if larger).
    hessian
        ``"gauss-newton"`` or ``"gradient-difference"`` (see above).
    """
    dtype = jnp.asarray(problem.data).dtype if _x64() else jnp.float32
    m_j = jnp.asarray(m, dtype)
    if hessian not in HESSIANS:
        raise ValueError(
            f"uncertainty.hessian must be one of {', '.join(HESSIANS)}, got {hessian!r}"
        )
    width = 1 if batch_size is None else int(batch_size)
    if width < 1:
        raise ValueError(f"uncertainty.batch_size must be >= 1, got {width}")
    counter = [0]
    if fd_step is None:
        scale = difference_step(problem, dtype, np.asarray(m_j))
    else:
        scale = float(fd_step) * (1.0 + float(jnp.max(jnp.abs(m_j))))
    if hessian == "gradient-difference":
        return _gradient_difference(problem, m_j, scale, counter)
    programs = _gauss_newton_programs(problem, m_j, width)
    if programs is not None:
        kind = "gauss-newton"
        products, misfit_gradient = programs
        misfit_at_m = []

        def block(vectors):
            hv, misfit_value = products(m_j, vectors)
            if not misfit_at_m:
                misfit_at_m.append(float(misfit_value))
            return hv

        def gradient():
            return np.asarray(misfit_gradient(m_j), dtype=float)

        def misfit():
            if not misfit_at_m:
                block(jnp.zeros((width, m_j.shape[0]), dtype))
            return misfit_at_m[0]

    else:
        kind = "finite-difference-jvp"
        products, transpose = _finite_difference_programs(problem, dtype)
        scale = jnp.asarray(scale, dtype)
        residual_at_m = []

        def block(vectors):
            hv, r0 = products(m_j, scale, vectors)
            if not residual_at_m:
                residual_at_m.append(r0)
            return hv

        def misfit():
            if not residual_at_m:
                block(jnp.zeros((width, m_j.shape[0]), dtype))
            return 0.5 * float(np.sum(np.asarray(residual_at_m[0], dtype=float) ** 2))

        def gradient():
            misfit()
            return np.asarray(transpose(m_j, residual_at_m[0]), dtype=float)

    def apply(vectors):
        vectors = np.asarray(vectors, dtype=float)
        single = vectors.ndim == 1
        vectors = vectors[:, None] if single else vectors
        n, count = vectors.shape
        counter[0] += count
        out = np.empty((n, count))
        for start in range(0, count, width):
            chunk = np.zeros((width, n))
            stop = min(start + width, count)
            chunk[: stop - start] = vectors[:, start:stop].T
            result = np.asarray(block(jnp.asarray(chunk, dtype)), dtype=float)
            out[:, start:stop] = result[: stop - start].T
        return out[:, 0] if single else out

    return MisfitHessian(apply, gradient, misfit, kind, counter)


def _gradient_difference(problem, m, scale, counter) -> MisfitHessian:
    """:func:`misfit_hessian` by central differences of the fit's compiled gradient."""
    from .._optimize import _value_and_grad

    objective = getattr(problem, "_objective_with_weight", None)
    if objective is None:
        raise ValueError(
            "uncertainty.hessian = gradient-difference needs a problem with a regularised "
            "objective (InverseProblem or a multi-experiment problem)"
        )
    # The fit's own compiled program (cached per objective): called with the same
    # argument types, it compiles nothing.
    value_and_grad = _value_and_grad(objective)
    zero = jnp.zeros((), m.dtype)

    def misfit_and_gradient(x):
        (_, misfit), grad = value_and_grad(jnp.asarray(x, m.dtype), zero)
        return float(misfit), np.asarray(grad, dtype=float)

    at_m = []

    def at_point():
        if not at_m:
            at_m.append(misfit_and_gradient(m))
        return at_m[0]

    m_float = np.asarray(m, dtype=float)

    def apply(vectors):
        vectors = np.asarray(vectors, dtype=float)
        single = vectors.ndim == 1
        vectors = vectors[:, None] if single else vectors
        counter[0] += vectors.shape[1]
        out = np.empty_like(vectors)
        for j in range(vectors.shape[1]):
            v = vectors[:, j]
            size = float(np.max(np.abs(v)))
            if size == 0.0:
                out[:, j] = 0.0
                continue
            eps = scale / size
            plus = misfit_and_gradient(m_float + eps * v)[1]
            minus = misfit_and_gradient(m_float - eps * v)[1]
            out[:, j] = (plus - minus) / (2.0 * eps)
        return out[:, 0] if single else out

    return MisfitHessian(
        apply, lambda: at_point()[1], lambda: at_point()[0], "gradient-difference", counter
    )


# Compiled finite-difference products per problem (and dtype), with the point m as an
# argument: an evidence sweep or a second posterior of the same problem compiles nothing.
_FD_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _finite_difference_programs(problem, dtype):
    """``(products(m, scale, V) -> (H V, r(m)), transpose(m, w) -> J^T w)``, jitted once."""
    cache = _FD_PROGRAMS.setdefault(problem, {})
    key = jnp.dtype(dtype).name
    if key in cache:
        return cache[key]
    residual = _residual_function(problem, dtype)

    def jacobian_vector(m, scale, v):
        eps = scale / jnp.maximum(jnp.max(jnp.abs(v)), jnp.finfo(v.dtype).tiny)
        # One batched solve for both sides (one trace of the solver, not two).
        plus, minus = jax.vmap(residual)(jnp.stack([m + eps * v, m - eps * v]))
        return (plus - minus) / (2.0 * eps)

    def jacobian_transpose(m, w):
        # J^T w as the gradient of <r(m), w>: under vmap over w the forward solve at m
        # does not depend on w and is computed once per block.
        return jax.grad(lambda x: jnp.vdot(residual(x), w))(m)

    @jax.jit
    def products(m, scale, vectors):
        # One forward solve at m per block (its pullback serves every vector, and the
        # residual at m comes with it): three solver instances to compile, not four.
        r, pullback = jax.vjp(residual, m)
        jv = jax.vmap(lambda v: jacobian_vector(m, scale, v))(vectors)
        return jax.vmap(lambda w: pullback(w)[0])(jv), r

    cache[key] = (products, jax.jit(jacobian_transpose))
    return cache[key]


# Compiled Gauss-Newton products per problem (and dtype and block width), with the point
# m as an argument: like the finite-difference ones, compiled once per run.
_GN_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gauss_newton_programs(problem, m, width):
    """``(products(m, V) -> (H V, misfit(m)), gradient(m))`` by forward mode, or ``None``.

    One compiled program linearises the problem at ``m`` (its own
    ``gauss_newton_operator``: the forward solve, ``J`` by forward mode and ``Jᵀ``
    by transposing it) and applies the misfit Hessian to a block of ``width``
    vectors (``vmap``): a second linearisation program (and its compilation) is
    not needed, and the forward solve at ``m`` is repeated once per block, a
    small fraction of the block's tangent and adjoint solves.  The misfit
    gradient, needed only for a Newton step, is a second program compiled on
    first use.

    ``None`` when the problem has no :meth:`gauss_newton_operator` or forward-mode
    differentiation of the solver is not available (``jax.linearize`` of a
    ``custom_vjp`` function raises ``TypeError`` while tracing).
    """
    if getattr(problem, "gauss_newton_operator", None) is None:
        return None
    cache = _GN_PROGRAMS.setdefault(problem, {})
    key = (jnp.dtype(m.dtype).name, int(width))
    if key not in cache:

        @jax.jit
        def products(m, vectors):
            operator = problem.gauss_newton_operator(m, weight=0.0)
            return jax.vmap(operator.misfit_hvp)(vectors), operator.misfit

        @jax.jit
        def gradient(m):
            return problem.gauss_newton_operator(m, weight=0.0).gradient

        block = jnp.zeros((width, m.shape[0]), m.dtype)
        try:
            # Tracing only: no compilation before the first product.
            lowered = products.lower(m, block)
        except TypeError as err:
            if "forward-mode" not in str(err) and "jvp" not in str(err):
                raise
            cache[key] = None
        else:
            compiled = []

            def run(m, vectors):
                if not compiled:
                    compiled.append(lowered.compile())
                return compiled[0](m, vectors)

            cache[key] = (run, gradient)
    return cache[key]


# Compiled residual programs per problem (and dtype and block width): ``vmap`` of the
# weighted residual over a block of points, for the Jacobian by differences.
_JACOBIAN_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _residual_program(problem, dtype, width):
    """``points (width, n) -> residuals (width, num_data)``, jitted once per width."""
    cache = _JACOBIAN_PROGRAMS.setdefault(problem, {})
    key = (jnp.dtype(dtype).name, int(width))
    if key not in cache:
        cache[key] = jax.jit(jax.vmap(_residual_function(problem, dtype)))
    return cache[key]


def difference_step(problem, dtype, m) -> float:
    r"""Absolute step of the central differences: :math:`\tau^{1/3}(1 + \max|m|)`.

    :math:`\tau` is the solver tolerance (or the precision's resolution, if
    larger): the central difference's truncation error (:math:`\propto\epsilon^2`)
    and the solver's error divided by the step (:math:`\tau/\epsilon`) balance at
    :math:`\epsilon \approx \tau^{1/3}`, for a relative error of about
    :math:`\tau^{2/3}`.
    """
    tol = float(problem.solver.get("tol", 1e-8) or 1e-8)
    resolution = max(tol, float(jnp.finfo(dtype).eps))
    return resolution ** (1.0 / 3.0) * (1.0 + float(np.max(np.abs(m))))


def residual_jacobian(problem, m, directions, *, batch_size: int | None = None, step=None):
    r"""``(J_r D, r(m), evaluations)``: the weighted residual's Jacobian applied to ``D``.

    Column ``j`` is the central difference
    :math:`(r(m + \epsilon_j d_j) - r(m - \epsilon_j d_j)) / 2\epsilon_j` of the
    weighted residual :math:`r = ((f(m) - d)/\sigma)` along the column ``d_j`` of
    ``directions``, with :math:`\epsilon_j = \epsilon/\max|d_j|` (``step``
    :math:`\epsilon`, default :func:`difference_step`): forward solves only, no tangent or
    adjoint solve, so the only program compiled is the forward model's (``vmap``
    over ``2 batch_size`` points at a time, padded, compiled once per width and
    reused for every block, rank and weight).  Exact for a model linear in ``m``
    (up to the solver's error divided by the step); otherwise its relative error
    is about :math:`\tau^{2/3}` (:func:`difference_step`).

    Parameters
    ----------
    problem
        The inverse problem (``weighted_residual``, or ``predict``, ``data`` and
        ``sigma``).
    m
        The point, ``(n,)``.
    directions
        ``D``, ``(n, k)``.
    batch_size
        Columns per compiled call (``2 batch_size`` residual evaluations); ``None``: 8.

    Returns
    -------
    tuple
        ``(A, r0, evaluations)``: ``A`` ``(num_data, k)`` (float64, or float32 for a
        float32 run), the residual at ``m`` ``(num_data,)`` and the number of
        residual evaluations (forward solves of every experiment), ``2k + 1``.
    """
    dtype = jnp.asarray(problem.data).dtype if _x64() else jnp.float32
    m = np.asarray(m, dtype=float)
    directions = np.asarray(directions, dtype=float)
    n, k = directions.shape
    width = 2 * (8 if batch_size is None else int(batch_size))
    if width < 2:
        raise ValueError(f"uncertainty.batch_size must be >= 1, got {width // 2}")
    program = _residual_program(problem, dtype, width)
    eps = (difference_step(problem, dtype, m) if step is None else float(step)) / np.maximum(
        np.max(np.abs(directions), axis=0), np.finfo(float).tiny
    )
    # Points: m, then m + eps_j d_j and m - eps_j d_j for every column.
    offsets = np.empty((2 * k, n))
    offsets[0::2] = (eps * directions).T
    offsets[1::2] = -(eps * directions).T
    points = np.concatenate([m[None, :], m[None, :] + offsets])
    num_data = int(problem.num_observations)
    # Stored at the run's precision: in float32 the difference's error (about
    # tol^(2/3) >= 2e-4) is far above float32's rounding, and the matrix is half the size.
    matrix = np.empty((num_data, k), np.float64 if jnp.dtype(dtype) == np.float64 else np.float32)
    r0 = None
    for start in range(0, points.shape[0], width):
        chunk = points[start : start + width]
        count = chunk.shape[0]
        if count < width:  # pad the last block with m (no new compilation)
            chunk = np.concatenate([chunk, np.repeat(m[None, :], width - count, axis=0)])
        values = np.asarray(program(jnp.asarray(chunk, dtype)), dtype=float)[:count]
        for row, index in zip(values, range(start, start + count), strict=True):
            if index == 0:
                r0 = row
            elif index % 2 == 1:
                plus = row
            else:
                j = index // 2 - 1
                matrix[:, j] = (plus - row) / (2.0 * eps[j])
    return matrix, r0, int(points.shape[0])


def jacobian_hessian(matrix, r0, prior) -> MisfitHessian:
    r"""The misfit Hessian :math:`J_r^T J_r` from ``A = J_r L`` (``L`` the prior's root).

    With :math:`L = C^{-T}` (``prior.cholesky`` ``C``), :math:`J_r = A C^T`: ``apply``
    is :math:`C A^T A C^T V`, ``gradient`` :math:`C A^T r_0`, ``misfit``
    :math:`\tfrac12\|r_0\|^2`; no solve (for the Newton step of an exact posterior).
    """
    chol = prior.cholesky
    counter = [0]

    def apply(vectors):
        vectors = np.asarray(vectors, dtype=float)
        counter[0] += 1 if vectors.ndim == 1 else vectors.shape[1]
        return chol @ (matrix.T @ (matrix @ (chol.T @ vectors)))

    return MisfitHessian(
        apply,
        lambda: chol @ (matrix.T @ r0),
        lambda: 0.5 * float(r0 @ r0),
        "gauss-newton-jacobian",
        counter,
    )


def _residual_function(problem, dtype):
    """``m -> ((predict(m) - data) / sigma).ravel()``."""
    weighted = getattr(problem, "weighted_residual", None)
    if weighted is not None:
        return lambda x: weighted(x).ravel()
    data = jnp.asarray(problem.data, dtype)
    inv_sigma = 1.0 / jnp.asarray(problem.sigma, dtype)
    return lambda x: ((problem.predict(x) - data) * inv_sigma).ravel()
