r"""Laplace posterior: Gaussian approximation of the posterior at the MAP point.

With the data misfit :math:`\Phi(m) = \tfrac12\|(f(m) - d)/\sigma\|^2` and a Gaussian
prior :math:`N(m_0, \Gamma_{pr})` whose precision is the regulariser's Hessian,
:math:`\Gamma_{pr}^{-1} = w\nabla^2 R`, the Laplace approximation at :math:`m^*` is
:math:`N(m^*, \Gamma_{post})` with the Gauss–Newton precision

.. math::
    \Gamma_{post}^{-1} = J^T\Gamma_{noise}^{-1}J + \Gamma_{pr}^{-1} = H_{mis} + \Gamma_{pr}^{-1}.

Everything below comes from the generalised eigenproblem
:math:`H_{mis} v = \lambda\,\Gamma_{pr}^{-1} v`, solved in its prior-preconditioned form
:math:`L^T H_{mis} L\,u = \lambda u` with :math:`\Gamma_{pr} = L L^T` using
Hessian–vector products only (randomized double pass, or Lanczos with full
reorthogonalisation; exact when the number of vectors reaches the number of
unknowns).  With the ``r`` largest pairs :math:`(\lambda_i, u_i)`,

- covariance :math:`\Gamma_{post} = L(I - U D U^T)L^T`,
  :math:`D = \mathrm{diag}(\lambda/(1+\lambda))`;
- samples :math:`m^* + L(\xi - U(1 - (1+\Lambda)^{-1/2})U^T\xi)`;
- log evidence (Laplace marginal likelihood, exact for a linear model)
  :math:`-\Phi(m^*) - \tfrac12\|m^* - m_0\|^2_{\Gamma_{pr}^{-1}}
  - \tfrac12\sum_i\log(1+\lambda_i) - \tfrac{N}{2}\log 2\pi - \sum_d\log\sigma_d`;
- effective number of parameters :math:`\sum_i \lambda_i/(1+\lambda_i)`.

The truncated eigenvalues are the smallest; each contributes at most
:math:`\lambda/(1+\lambda)` to every one of these quantities.  The prior is dense
(its matrices are cheap next to the PDE solves); :math:`J` is never formed.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ._optimize import IterationInfo, OptimizeResult
from ._problem import warm_started_fits

METHODS = ("randomized", "nystrom", "lanczos")
MAX_DENSE_UNKNOWNS = 8000  # the prior is a dense (n, n) matrix: 8000^2 doubles = 512 MB


# -- the prior -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianPrior:
    r"""Gaussian prior :math:`N(m_0, \Gamma_{pr})` on the optimisation vector, held densely.

    Attributes
    ----------
    center
        Prior mean :math:`m_0`, ``(n,)``.
    precision
        :math:`\Gamma_{pr}^{-1}`, ``(n, n)`` (float64).
    cholesky
        Lower-triangular ``C`` with ``precision = C C^T``; the covariance square
        root is :math:`L = C^{-T}` (:math:`\Gamma_{pr} = L L^T`).
    gaussian
        ``False`` when the regulariser is not quadratic (total variation): then its
        Hessian at the MAP point is only a local Gaussian model and the evidence is
        not defined.
    """

    center: np.ndarray
    precision: np.ndarray
    cholesky: np.ndarray
    gaussian: bool = True

    @property
    def size(self) -> int:
        return int(self.center.shape[0])

    def sqrt_covariance(self, u):
        """``L u`` (``u`` of shape ``(n,)`` or ``(n, k)``)."""
        return scipy.linalg.solve_triangular(self.cholesky, u, lower=True, trans="T")

    def sqrt_covariance_t(self, v):
        """``L^T v``."""
        return scipy.linalg.solve_triangular(self.cholesky, v, lower=True)

    def variance(self) -> np.ndarray:
        """Pointwise prior variance ``diag(Gamma_pr)``, ``(n,)``."""
        return np.sum(self.sqrt_covariance(np.eye(self.size)) ** 2, axis=1)

    def quadratic(self, m) -> float:
        r""":math:`\tfrac12 (m - m_0)^T \Gamma_{pr}^{-1} (m - m_0)`."""
        r = np.asarray(m, dtype=float) - self.center
        return 0.5 * float(r @ self.precision @ r)

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """``(num_samples, n)`` prior samples."""
        xi = rng.standard_normal((self.size, int(num_samples)))
        return (self.center[:, None] + self.sqrt_covariance(xi)).T


def gaussian_prior(problem, m, *, weight=None, nugget: float = 1e-2, center=None):
    r"""The prior whose precision is the regulariser's Hessian at ``m``.

    .. math::
        \Gamma_{pr}^{-1} = w\,\nabla^2_m R(\mathrm{field}(m))
            + \nu\,\mathrm{blockdiag}(P^T M P, I)\quad(\text{nugget, see below})

    Parameters
    ----------
    problem
        :class:`~pdeinv.inverse.InverseProblem` or multi-experiment problem.
    m
        Point of the Hessian (the MAP point; quadratic regularisers do not depend on it).
    weight
        Regularisation weight ``w``; default ``problem.weight``.
    nugget
        Precision :math:`\nu \ge 0` of a weak Tikhonov term
        :math:`\tfrac\nu2\int(\mathrm{field}(m) - \mathrm{field}(m_c))^2` added when the
        regulariser alone is not a proper prior (``h1``, ``tv``, ``none``: constants
        cost nothing), and always on unknowns the regulariser does not see (an
        advection velocity): there :math:`\tfrac\nu2\|m - m_c\|^2`.
    center
        :math:`m_c`, ``(n,)``: the prior mean of the nugget term; default: the
        regulariser's ``mean`` on the field block and zero elsewhere.

    Raises
    ------
    ValueError
        When there are more than ``MAX_DENSE_UNKNOWNS`` unknowns, the weight or
        nugget is negative, or the precision is not positive definite (name the
        keys to change).
    """
    parameters = problem.parameters
    regularizer = problem.regularizer
    weight = float(problem.weight if weight is None else weight)
    m = np.asarray(m, dtype=float)
    n, k = parameters.size, parameters.num_field_params
    if n > MAX_DENSE_UNKNOWNS:
        raise ValueError(
            f"uncertainty needs at most {MAX_DENSE_UNKNOWNS} unknowns (the prior is held as a "
            f"dense matrix), got {n}; use parameterization.kind = coarse or regions"
        )
    if weight < 0 or nugget < 0:
        raise ValueError(f"weight and uncertainty.nugget must be >= 0, got {weight}, {nugget}")
    if center is None:
        center = np.zeros(n)
        center[:k] = float(getattr(regularizer, "mean", 0.0))
    center = np.asarray(center, dtype=float)
    if center.shape != (n,):
        raise ValueError(f"center must have shape ({n},), got {center.shape}")
    proper = bool(getattr(regularizer, "proper", False))
    gaussian = bool(getattr(regularizer, "gaussian", False))
    mass = _lumped_mass(regularizer, parameters)
    # Assembled in float64 whatever the run's precision: the nugget's eigenvalues can sit
    # below float32's resolution of the regulariser's (Cholesky would then fail).
    field_matrix = _field_matrix(parameters)  # P: (nodes, k), field = P m[:k]
    hessian_p = _field_hessian_times(regularizer, parameters.field(jnp.asarray(m)), field_matrix)
    block = weight * (field_matrix.T @ hessian_p)
    if not proper:
        block = block + nugget * field_matrix.T @ (mass[:, None] * field_matrix)
    precision = np.zeros((n, n))
    precision[:k, :k] = block
    precision[k:, k:] = nugget * np.eye(n - k)
    precision = 0.5 * (precision + precision.T)
    try:
        cholesky = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        raise ValueError(
            "the prior precision (regulariser Hessian) is not positive definite; use "
            "regularization.kind = bilaplacian or tikhonov, or uncertainty.nugget > 0"
        ) from None
    if gaussian and proper:
        # A quadratic regulariser's own mean is the prior mean (R = 0 there).
        center = _field_mean(regularizer, center, k)
    return GaussianPrior(center, precision, cholesky, gaussian)


def _field_matrix(parameters) -> np.ndarray:
    """The linear map ``P`` (nodes x field unknowns) of the parameterisation, in float64."""
    from ._parameterization import CoarseGrid, NodalField, PiecewiseConstant

    param = parameters.parameterization
    if isinstance(param, NodalField):
        return np.eye(param.num_nodes)
    if isinstance(param, PiecewiseConstant):
        return np.eye(param.num_params)[param.labels]
    if isinstance(param, CoarseGrid):
        nodes = param.index.shape[0]
        matrix = np.zeros((nodes, param.num_params))
        np.add.at(matrix, (np.arange(nodes)[:, None], param.index), param.weight)
        return matrix
    # Any other linear map: its columns in the run's precision.
    k = parameters.num_field_params
    columns = jax.vmap(param.field)(jnp.eye(k))
    return np.asarray(columns, dtype=float).T


def _field_hessian_times(regularizer, field, matrix) -> np.ndarray:
    """``H_R @ matrix`` for the regulariser's Hessian on the nodal field, float64.

    Quadratic regularisers use their sparse matrices (never a dense nodes x nodes
    one); others (total variation) Hessian-vector products in the run's precision.
    """
    from ._regularization import (
        BiLaplacian,
        H1Seminorm,
        NoRegularization,
        Tikhonov,
        lumped_mass,
        stiffness_matrix,
    )

    if isinstance(regularizer, H1Seminorm):
        return np.asarray(stiffness_matrix(regularizer.space) @ matrix)
    if isinstance(regularizer, Tikhonov):
        return lumped_mass(regularizer.space)[:, None] * matrix
    if isinstance(regularizer, BiLaplacian):
        a = regularizer.operator()
        return np.asarray(a.T @ ((a @ matrix) / lumped_mass(regularizer.space)[:, None]))
    if isinstance(regularizer, NoRegularization):
        return np.zeros_like(matrix)
    gradient = jax.grad(regularizer)

    def hvp(v):
        return jax.jvp(gradient, (field,), (v,))[1]

    columns = jax.jit(jax.vmap(hvp, in_axes=1, out_axes=1))(jnp.asarray(matrix, field.dtype))
    return np.asarray(columns, dtype=float)


def _field_mean(regularizer, center, k):
    center = center.copy()
    if hasattr(regularizer, "mean"):
        center[:k] = float(regularizer.mean)
    return center


def _lumped_mass(regularizer, parameters):
    from ._regularization import lumped_mass

    space = getattr(regularizer, "space", None)
    if space is None:
        return np.ones(int(np.shape(parameters.field(jnp.zeros(parameters.size)))[0]))
    return lumped_mass(space)


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


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
    tol = float(problem.solver.get("tol", 1e-8) or 1e-8)
    resolution = max(tol, float(jnp.finfo(dtype).eps))
    step = resolution ** (1.0 / 3.0) if fd_step is None else float(fd_step)
    scale = step * (1.0 + float(jnp.max(jnp.abs(m_j))))
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
    from ._optimize import _value_and_grad

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


def _residual_function(problem, dtype):
    """``m -> ((predict(m) - data) / sigma).ravel()``."""
    weighted = getattr(problem, "weighted_residual", None)
    if weighted is not None:
        return lambda x: weighted(x).ravel()
    data = jnp.asarray(problem.data, dtype)
    inv_sigma = 1.0 / jnp.asarray(problem.sigma, dtype)
    return lambda x: ((problem.predict(x) - data) * inv_sigma).ravel()


# -- eigensolvers ------------------------------------------------------------------------


class LowRankEigen(NamedTuple):
    """The ``r`` largest eigenpairs of a symmetric PSD operator, largest first."""

    eigenvalues: np.ndarray  # (r,)
    eigenvectors: np.ndarray  # (n, r), orthonormal columns
    num_products: int  # operator applications used
    exact: bool  # True when the whole space was spanned


def dense_eigh(apply_block, n: int) -> LowRankEigen:
    """All eigenpairs from the ``n`` columns ``apply_block(I)`` (exact)."""
    matrix = apply_block(np.eye(n))
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    order = np.argsort(values)[::-1]
    return LowRankEigen(np.maximum(values[order], 0.0), vectors[:, order], n, True)


def randomized_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    """Randomized double pass (Halko, Martinsson & Tropp 2011, Alg. 5.3 + 4.1).

    ``Y = A Omega`` for a Gaussian ``Omega`` with ``rank + oversampling`` columns,
    ``Q = orth(Y)``, then the eigenpairs of ``Q^T A Q``; ``2 (rank + oversampling)``
    products.  With ``rank + oversampling >= n`` it is :func:`dense_eigh`; with
    ``rank + oversampling >= max_rank`` (a bound on the rank of ``A``) ``Y`` spans
    the range of ``A`` and the result is exact as well.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    samples = rank + oversampling
    if samples >= n:
        result = dense_eigh(apply_block, n)
        return result._replace(eigenvalues=result.eigenvalues[:rank],
                               eigenvectors=result.eigenvectors[:, :rank])  # fmt: skip
    omega = rng.standard_normal((n, samples))
    q, _ = np.linalg.qr(apply_block(omega))
    t = q.T @ apply_block(q)
    values, vectors = np.linalg.eigh(0.5 * (t + t.T))
    order = np.argsort(values)[::-1][:rank]
    exact = max_rank is not None and samples >= max_rank
    return LowRankEigen(np.maximum(values[order], 0.0), q @ vectors[:, order], 2 * samples, exact)


def nystrom_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    r"""Randomized Nyström approximation, single pass (Tropp, Yurtsever, Udell & Cevher 2017).

    For a symmetric positive semi-definite ``A``: ``Y = A Omega`` for an orthonormal
    Gaussian ``Omega`` with ``rank + oversampling`` columns, and
    :math:`A \approx Y(\Omega^T Y)^{+}Y^T`, whose eigenpairs come from the SVD of
    :math:`Y C^{-1}` (``C`` the Cholesky factor of :math:`\Omega^T Y`, both
    shifted by :math:`\nu = \epsilon\|Y\|` for stability, the shift removed from
    the eigenvalues).  ``rank + oversampling`` products, half of
    :func:`randomized_eigh`'s, in one batch; the approximation error is that of
    the randomized range finder applied to :math:`A^{1/2}` (squared), so it is
    accurate where the spectrum decays past ``rank``, as a misfit Hessian's does.
    With ``rank + oversampling >= n`` it is :func:`dense_eigh`; with
    ``rank + oversampling >= max_rank`` (a bound on the rank of ``A``) the range of
    ``A`` is captured and the result is exact.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    samples = rank + oversampling
    if samples >= n:
        result = dense_eigh(apply_block, n)
        return result._replace(eigenvalues=result.eigenvalues[:rank],
                               eigenvectors=result.eigenvectors[:, :rank])  # fmt: skip
    omega, _ = np.linalg.qr(rng.standard_normal((n, samples)))
    y = apply_block(omega)
    shift = np.finfo(float).eps * max(np.linalg.norm(y), np.finfo(float).tiny)
    y = y + shift * omega
    core = omega.T @ y
    try:
        cholesky = np.linalg.cholesky(0.5 * (core + core.T))
    except np.linalg.LinAlgError:
        # Omega^T A Omega is singular beyond the shift (A not PSD to rounding, e.g. a
        # finite-difference product): its eigendecomposition, negative part dropped.
        values, vectors = np.linalg.eigh(0.5 * (core + core.T))
        keep = values > shift * samples
        factor = y @ (vectors[:, keep] / np.sqrt(values[keep]))
    else:
        factor = scipy.linalg.solve_triangular(cholesky, y.T, lower=True).T  # Y C^{-T}
    u, sigma, _ = np.linalg.svd(factor, full_matrices=False)
    values = np.maximum(sigma[:rank] ** 2 - shift, 0.0)
    exact = max_rank is not None and samples >= max_rank
    return LowRankEigen(values, u[:, :rank], samples, exact)


def lanczos_eigh(
    apply_block, n: int, rank: int, *, oversampling: int = 10, rng=None, max_rank=None
) -> LowRankEigen:
    """Lanczos with full reorthogonalisation, ``rank + oversampling`` steps, Ritz pairs.

    Reorthogonalising every step against the whole basis (twice, Gram–Schmidt)
    keeps the Ritz vectors orthonormal, which the eigenvalue problem needs and the
    exponential's Lanczos does not.  A breakdown (the Krylov space is invariant,
    e.g. a low-rank data misfit) ends the iteration early: the missing eigenvalues
    are then zero on the orthogonal complement, and the result is exact.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    del max_rank  # a breakdown finds the rank by itself
    steps = min(rank + oversampling, n)
    basis = np.zeros((n, steps))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    size = 0
    for j in range(steps):
        basis[:, j] = v
        size = j + 1
        w = apply_block(v[:, None])[:, 0]
        alpha[j] = v @ w
        for _ in range(2):
            w -= basis[:, :size] @ (basis[:, :size].T @ w)
        beta[j] = np.linalg.norm(w)
        scale = max(abs(alpha[: j + 1]).max(), 1e-300)
        if beta[j] <= 1e-12 * scale or j == steps - 1:
            break
        v = w / beta[j]
    exact = size == n or beta[size - 1] <= 1e-12 * max(abs(alpha[:size]).max(), 1e-300)
    t = np.diag(alpha[:size]) + np.diag(beta[: size - 1], 1) + np.diag(beta[: size - 1], -1)
    values, vectors = np.linalg.eigh(t)
    order = np.argsort(values)[::-1][:rank]
    return LowRankEigen(
        np.maximum(values[order], 0.0), basis[:, :size] @ vectors[:, order], size, bool(exact)
    )


def generalized_eigh(
    hessian_apply, prior: GaussianPrior, rank: int, *, method: str = "randomized",
    oversampling: int = 10, rng=None, max_rank: int | None = None,
) -> LowRankEigen:  # fmt: skip
    r"""Largest eigenpairs of :math:`H v = \lambda\,\Gamma_{pr}^{-1} v` (prior-preconditioned).

    Works on :math:`\tilde H = L^T H L` (:math:`\Gamma_{pr} = L L^T`); returns its
    eigenvalues and orthonormal eigenvectors ``U``; the generalised eigenvectors
    are ``V = L U`` (:math:`V^T\Gamma_{pr}^{-1}V = I`).

    Parameters
    ----------
    hessian_apply
        ``H V`` for a block ``V`` of shape ``(n, b)``.
    prior
        The :class:`GaussianPrior` (the pencil's second matrix is its precision).
    rank
        Number of pairs, ``>= 1``; ``rank + oversampling >= n`` is exact.
    method
        ``"randomized"`` (double pass, batched products), ``"nystrom"`` (single
        pass: half the products, for a positive semi-definite ``H``) or ``"lanczos"``.
    oversampling
        Extra vectors (randomized, Nyström) or steps (Lanczos), ``>= 0``.
    max_rank
        A bound on the rank of ``H`` (the number of data for a misfit Hessian):
        ``rank`` is capped there, and reaching it makes the result exact.
    """
    n = prior.size
    if method not in METHODS:
        raise ValueError(f"uncertainty.method must be one of {', '.join(METHODS)}, got {method!r}")
    if rank < 1:
        raise ValueError(f"uncertainty.rank must be >= 1, got {rank}")
    if oversampling < 0:
        raise ValueError(f"uncertainty.oversampling must be >= 0, got {oversampling}")
    rank = min(int(rank), n, n if max_rank is None else max(int(max_rank), 1))

    def preconditioned(u):
        return prior.sqrt_covariance_t(hessian_apply(prior.sqrt_covariance(u)))

    solver = {"randomized": randomized_eigh, "nystrom": nystrom_eigh, "lanczos": lanczos_eigh}[
        method
    ]
    return solver(
        preconditioned, n, rank, oversampling=int(oversampling), rng=rng, max_rank=max_rank
    )


# -- the posterior -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LaplacePosterior:
    r"""Gaussian posterior :math:`N(\mathrm{mean}, \Gamma_{post})` of the optimisation vector.

    Attributes
    ----------
    mean
        Posterior mean ``(n,)`` (the MAP point, or one Gauss–Newton step from it).
    prior
        The :class:`GaussianPrior`.
    eigenvalues, eigenvectors
        ``(r,)`` and ``(n, r)``: the prior-preconditioned misfit Hessian's largest
        eigenpairs (:func:`generalized_eigh`).
    misfit
        Data misfit :math:`\Phi` at the mean.
    num_data, log_sigma_sum
        Number of data and :math:`\sum_d \log\sigma_d` (the noise normalisation).
    exact
        ``True`` when every eigenpair was computed (no truncation).
    num_hessian_products, hessian_kind, time_s
        Cost: misfit Hessian–vector products, how they were computed, seconds.
    """

    mean: np.ndarray
    prior: GaussianPrior
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    misfit: float
    num_data: int
    log_sigma_sum: float
    exact: bool = False
    num_hessian_products: int = 0
    hessian_kind: str = ""
    time_s: float = 0.0

    @property
    def _shrink(self) -> np.ndarray:
        lam = self.eigenvalues
        return lam / (1.0 + lam)

    def covariance_apply(self, v) -> np.ndarray:
        r""":math:`\Gamma_{post} v` for ``v`` of shape ``(n,)`` or ``(n, k)``."""
        u = self.prior.sqrt_covariance_t(np.asarray(v, dtype=float))
        proj = self.eigenvectors.T @ u
        proj = proj * (self._shrink[:, None] if proj.ndim == 2 else self._shrink)
        return self.prior.sqrt_covariance(u - self.eigenvectors @ proj)

    def covariance(self) -> np.ndarray:
        """Dense :math:`\\Gamma_{post}`, ``(n, n)`` (small problems and tests)."""
        return self.covariance_apply(np.eye(self.prior.size))

    def variance(self) -> np.ndarray:
        """Pointwise posterior variance of ``m``, ``(n,)``."""
        root = self.prior.sqrt_covariance(np.eye(self.prior.size))  # L
        lu = root @ self.eigenvectors
        return np.sum(root**2, axis=1) - np.sum(lu**2 * self._shrink, axis=1)

    def std(self) -> np.ndarray:
        """Pointwise posterior standard deviation of ``m``, ``(n,)``."""
        return np.sqrt(np.maximum(self.variance(), 0.0))

    def field_std(self, linear_map: Callable, *, chunk: int = 256) -> np.ndarray:
        r"""Pointwise std of ``linear_map(m)`` (e.g. the nodal log-coefficient field).

        For a linear map ``P``: :math:`\mathrm{diag}(P\Gamma_{post}P^T)` from the
        columns of ``P L`` and ``P L U``, ``chunk`` columns at a time.
        """
        n = self.prior.size
        dtype = jnp.float64 if _x64() else jnp.float32
        mapped = jax.jit(jax.vmap(linear_map, in_axes=1, out_axes=1))
        zero = np.asarray(linear_map(jnp.zeros(n, dtype)), dtype=float)
        root = self.prior.sqrt_covariance(np.eye(n))
        prior_part = np.zeros_like(zero)
        for start in range(0, n, chunk):
            cols = root[:, start : start + chunk]
            prior_part += np.sum(
                (np.asarray(mapped(jnp.asarray(cols, dtype)), dtype=float) - zero[:, None]) ** 2,
                axis=1,
            )
        reduction = np.zeros_like(zero)
        lu = root @ self.eigenvectors
        for start in range(0, lu.shape[1], chunk):
            cols = lu[:, start : start + chunk]
            plu = np.asarray(mapped(jnp.asarray(cols, dtype)), dtype=float) - zero[:, None]
            reduction += np.sum(plu**2 * self._shrink[start : start + chunk], axis=1)
        return np.sqrt(np.maximum(prior_part - reduction, 0.0))

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """``(num_samples, n)`` posterior samples."""
        xi = rng.standard_normal((self.prior.size, int(num_samples)))
        damp = 1.0 - 1.0 / np.sqrt(1.0 + self.eigenvalues)
        xi = xi - self.eigenvectors @ (damp[:, None] * (self.eigenvectors.T @ xi))
        return (self.mean[:, None] + self.prior.sqrt_covariance(xi)).T

    @property
    def effective_parameters(self) -> float:
        r""":math:`\sum_i \lambda_i/(1+\lambda_i)`: how many directions the data determine."""
        return float(np.sum(self._shrink))

    @property
    def log_evidence(self) -> float | None:
        """Laplace log marginal likelihood ``log p(d | w)``; ``None`` for a non-Gaussian prior."""
        if not self.prior.gaussian:
            return None
        return float(
            -self.misfit
            - self.prior.quadratic(self.mean)
            - 0.5 * np.sum(np.log1p(self.eigenvalues))
            - 0.5 * self.num_data * math.log(2.0 * math.pi)
            - self.log_sigma_sum
        )


def default_rank(num_unknowns: int) -> int:
    """``min(num_unknowns, 200)``, the default of ``uncertainty.rank``."""
    return int(min(num_unknowns, 200))


def laplace_posterior(
    problem,
    m,
    *,
    rank: int | None = None,
    method: str = "randomized",
    oversampling: int = 10,
    weight: float | None = None,
    nugget: float = 1e-2,
    center=None,
    newton_step: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
    hessian: MisfitHessian | str | None = None,
) -> LaplacePosterior:
    r"""Laplace posterior of ``problem`` at ``m`` (the MAP point of a fit).

    Parameters
    ----------
    problem
        :class:`~pdeinv.inverse.InverseProblem` (or multi-experiment problem).
    m
        Linearisation point, ``(n,)``: the fitted vector.
    rank
        Eigenpairs kept; default ``min(n, 200)``, and never more than the number of
        data (the misfit Hessian's rank).  ``rank + oversampling`` reaching ``n`` or
        the number of data (randomized), or a Lanczos breakdown, make the result exact.
    method, oversampling
        Eigensolver (``"randomized"`` double pass, ``"nystrom"`` single pass or
        ``"lanczos"``, see :func:`generalized_eigh`) and its extra vectors.
    weight, nugget, center
        Prior: see :func:`gaussian_prior`.
    newton_step
        Take the mean one Gauss–Newton step from ``m``,
        :math:`m - \Gamma_{post}\nabla J(m)`: the exact posterior mean of a linear
        model from any ``m`` (leave off for nonlinear fits at a bound).  Taken only
        when the posterior is exact (no truncated eigenpairs); otherwise the mean is ``m``.
    batch_size
        Hessian–vector products at once (see :func:`misfit_hessian`); Lanczos
        uses 1.
    seed
        Seed of the random start vectors.
    hessian
        A ready :class:`MisfitHessian`, or the kind of :func:`misfit_hessian` at ``m``
        to use: ``"gauss-newton"`` (default) or ``"gradient-difference"`` (no
        compilation: the fit's gradient program).
    """
    start = time.perf_counter()
    m = np.asarray(m, dtype=float)
    n = problem.parameters.size
    if m.shape != (n,):
        raise ValueError(f"m must have shape ({n},), got {m.shape}")
    rank = default_rank(n) if rank is None else int(rank)
    weight = float(problem.weight if weight is None else weight)
    prior = gaussian_prior(problem, m, weight=weight, nugget=nugget, center=center)
    if hessian is None or isinstance(hessian, str):
        # Lanczos applies one vector at a time: a wider block would be padding only.
        width = 1 if method == "lanczos" else batch_size
        hessian = misfit_hessian(
            problem, m, batch_size=width, hessian="gauss-newton" if hessian is None else hessian
        )
    before = hessian.counter[0]
    eigen = generalized_eigh(
        hessian.apply, prior, rank, method=method, oversampling=oversampling,
        rng=np.random.default_rng(seed), max_rank=int(problem.num_observations),
    )  # fmt: skip
    posterior = LaplacePosterior(
        mean=m,
        prior=prior,
        eigenvalues=eigen.eigenvalues,
        eigenvectors=eigen.eigenvectors,
        misfit=0.0,
        num_data=int(problem.num_observations),
        log_sigma_sum=_log_sigma_sum(problem),
        exact=eigen.exact,
        hessian_kind=hessian.kind,
    )
    misfit = hessian.misfit()
    # Only an exact posterior gives the Newton step: a truncated one has the prior's
    # (much larger) covariance along the dropped directions and would overshoot there.
    if newton_step and eigen.exact:
        # Gradient of misfit + the prior's quadratic (which is w R for a quadratic R).
        misfit_gradient = hessian.gradient()
        step = -posterior.covariance_apply(misfit_gradient + prior.precision @ (m - prior.center))
        # The Gauss-Newton model of the misfit at the new point (exact for a linear model).
        misfit += float(misfit_gradient @ step + 0.5 * step @ hessian.apply(step))
        m = m + step
    return dataclasses.replace(
        posterior,
        mean=m,
        misfit=misfit,
        num_hessian_products=hessian.counter[0] - before,
        time_s=time.perf_counter() - start,
    )


def _log_sigma_sum(problem) -> float:
    sigma = np.asarray(problem.sigma, dtype=float)
    shape = np.shape(problem.data)
    return float(np.sum(np.log(np.broadcast_to(sigma, shape))))


def coverage(true_field, map_field, std_field, *, num_std: float = 2.0) -> float:
    """Fraction of nodes with ``|true - map| <= num_std * std``."""
    true_field, map_field = np.asarray(true_field, float), np.asarray(map_field, float)
    inside = np.abs(true_field - map_field) <= num_std * np.asarray(std_field, float)
    return float(np.mean(inside))


# -- choosing the weight by the evidence -------------------------------------------------


class EvidenceResult(NamedTuple):
    """Fit at the weight of largest Laplace evidence, and the sweep to it."""

    result: OptimizeResult
    weight: float
    posterior: LaplacePosterior
    weights: np.ndarray  # tried, largest first
    log_evidences: np.ndarray  # at each tried weight
    misfits: np.ndarray
    results: tuple = ()


def fit_evidence(
    problem,
    x0,
    weights,
    optimizer=None,
    *,
    posterior_options: dict | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    on_weight: Callable[[float], None] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint: Callable | None = None,
) -> EvidenceResult:
    """Choose the regularisation weight that maximises the Laplace evidence.

    Fits for each weight of ``weights`` from the largest down, each warm-started
    from the previous fit (as :func:`~pdeinv.inverse.fit_morozov`), computes the
    :func:`laplace_posterior` at each fit (``posterior_options``) and keeps the
    weight with the largest ``log_evidence``.  The sweep stops early when the
    evidence has fallen for two weights in a row after its maximum, or when a fit
    is interrupted (``stop``).  The regulariser must be Gaussian (not ``tv``).
    """
    weights = np.sort(np.asarray(weights, dtype=float))[::-1]
    if weights.size == 0 or np.any(weights <= 0):
        raise ValueError("regularization.evidence_weights must be a non-empty list of weights > 0")
    if not getattr(problem.regularizer, "gaussian", False):
        raise ValueError(
            "regularization.choose_weight = evidence needs a Gaussian prior "
            "(regularization.kind h1, tikhonov, bilaplacian or none), not total variation"
        )
    options = dict(posterior_options or {})
    tried, evidences, misfits, results, posteriors = [], [], [], [], []
    sweep = warm_started_fits(
        problem, x0, weights, optimizer,
        callback=callback, on_weight=on_weight, stop=stop, checkpoint=checkpoint,
    )  # fmt: skip
    for w, result in sweep:
        tried.append(w)
        misfits.append(result.misfit)
        results.append(result)
        if result.status == 3:  # interrupted: no posterior for a half-finished fit
            break
        posterior = laplace_posterior(problem, np.asarray(result.x), weight=float(w), **options)
        posteriors.append(posterior)
        evidences.append(posterior.log_evidence)
        best = int(np.argmax(evidences))
        if len(evidences) - 1 - best >= 2:
            break
    if not posteriors:
        return EvidenceResult(results[-1], tried[-1], None, np.asarray(tried),
                              np.asarray([]), np.asarray(misfits), tuple(results))  # fmt: skip
    best = int(np.argmax(evidences))
    return EvidenceResult(
        results[best], tried[best], posteriors[best], np.asarray(tried[: len(evidences)]),
        np.asarray(evidences), np.asarray(misfits), tuple(results),
    )  # fmt: skip
