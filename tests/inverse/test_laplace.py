"""Laplace posterior: eigensolvers, exactness, Bayesian linear regression, priors, calibration.

The linear problems use a *dense* forward (matrix exponentials of the assembled
operator, computed once with scipy) so the default tests stay fast; the same
checks through ``pdeinv.expm_multiply`` are ``-m slow``.  References are
independent: scipy's generalised ``eigh``, and the closed-form Gaussian posterior
and marginal likelihood of ``d = G m + e``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.special import kv

from pdeinv import inverse, models
from pdeinv.discretize import grid
from pdeinv.inverse._laplace import (
    GaussianPrior,
    dense_eigh,
    generalized_eigh,
    lanczos_eigh,
    nystrom_eigh,
    randomized_eigh,
)
from pdeinv.inverse._regularization import lumped_mass, matern_coefficients

# -- eigensolvers ----------------------------------------------------------------------


def _random_pencil(n, rank, seed, decay=0.7):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0][:, :rank]
    hessian = basis @ np.diag(100.0 * decay ** np.arange(rank)) @ basis.T
    root = rng.standard_normal((n, n))
    precision = root @ root.T / n + 0.5 * np.eye(n)
    return hessian, precision


def _prior(precision, center=None):
    n = precision.shape[0]
    center = np.zeros(n) if center is None else center
    return GaussianPrior(center, precision, np.linalg.cholesky(precision))


@pytest.mark.parametrize("method", ["randomized", "nystrom", "lanczos"])
def test_generalized_eigh_matches_scipy_on_random_spd_pencil(method):
    n = 40
    hessian, precision = _random_pencil(n, n, seed=0)
    reference = scipy.linalg.eigh(hessian, precision, eigvals_only=True)[::-1]
    prior = _prior(precision)
    full = generalized_eigh(lambda v: hessian @ v, prior, n, method=method)
    assert full.exact
    np.testing.assert_allclose(full.eigenvalues, reference, rtol=1e-9, atol=1e-9 * reference[0])
    # V = L U are generalised eigenvectors, Gamma_pr^{-1}-orthonormal.
    v = prior.sqrt_covariance(full.eigenvectors)
    np.testing.assert_allclose(v.T @ precision @ v, np.eye(n), atol=1e-8)
    np.testing.assert_allclose(hessian @ v, precision @ v * full.eigenvalues, atol=1e-7)
    # Truncated: the leading pairs of a decaying spectrum.
    top = generalized_eigh(lambda v: hessian @ v, prior, 8, method=method, oversampling=12)
    assert not top.exact
    # Lanczos converges the extreme Ritz values fast; the double pass is accurate to
    # about (lambda_{k+p} / lambda_k) of this slowly decaying spectrum, the single pass
    # (Nystrom, half the products) to about its square root (measured: 3e-5, 8e-3).
    rtol = {"lanczos": 1e-6, "randomized": 1e-3, "nystrom": 3e-2}[method]
    np.testing.assert_allclose(top.eigenvalues, reference[:8], rtol=rtol)
    products = {"lanczos": 20, "randomized": 40, "nystrom": 20}[method]
    assert top.num_products == products


def test_eigensolvers_exact_on_low_rank_operator():
    n, rank = 30, 6
    hessian, _ = _random_pencil(n, rank, seed=1, decay=0.9)
    reference = np.linalg.eigvalsh(hessian)[::-1][:rank]

    def apply(v):
        return hessian @ v

    lanczos = lanczos_eigh(apply, n, 20, oversampling=0)
    assert lanczos.exact and lanczos.num_products <= rank + 2  # breakdown after the range
    np.testing.assert_allclose(lanczos.eigenvalues[:rank], reference, rtol=1e-10)
    randomized = randomized_eigh(apply, n, rank, oversampling=2, max_rank=rank)
    assert randomized.exact
    np.testing.assert_allclose(randomized.eigenvalues, reference, rtol=1e-10)
    # Nystrom: one pass of rank + oversampling products captures the whole range.
    nystrom = nystrom_eigh(apply, n, rank, oversampling=2, max_rank=rank)
    assert nystrom.exact and nystrom.num_products == rank + 2
    np.testing.assert_allclose(nystrom.eigenvalues, reference, rtol=1e-10)
    np.testing.assert_allclose(
        hessian @ nystrom.eigenvectors, nystrom.eigenvectors * nystrom.eigenvalues, atol=1e-9
    )
    dense = dense_eigh(apply, n)
    np.testing.assert_allclose(dense.eigenvalues[:rank], reference, rtol=1e-10)


def test_generalized_eigh_rejects_bad_options():
    prior = _prior(np.eye(3))
    with pytest.raises(ValueError, match="uncertainty.method"):
        generalized_eigh(lambda v: v, prior, 2, method="arnoldi")
    with pytest.raises(ValueError, match="uncertainty.rank"):
        generalized_eigh(lambda v: v, prior, 0)
    with pytest.raises(ValueError, match="uncertainty.oversampling"):
        generalized_eigh(lambda v: v, prior, 2, oversampling=-1)


# -- a linear problem: the initial state of advection-diffusion --------------------------


def _dense_forward(model, times):
    """``forward`` of the problem with ``exp(t A)`` precomputed (the reference operator)."""
    matrix = np.asarray(jax.jacfwd(lambda u: model.matvec(u, model.params))(model.u0))
    propagators = jnp.asarray(np.stack([scipy.linalg.expm(t * matrix) for t in times]))

    def forward(model, params, times_, **solver):
        u0 = model.state_from_field(params[inverse.INITIAL_CONDITION])
        return propagators @ u0

    return forward, np.asarray(propagators)


def _linear_problem(*, cells=7, seed=0, dense=True, weight=1.0, noise=0.01, truth=None):
    space = grid((cells, cells))
    n = space.num_nodes
    model = models.advection_diffusion_fd(
        space, jnp.full(n, np.log(0.02)), jnp.asarray([1.0, 0.5]), jnp.zeros(n), bc="dirichlet"
    )
    observation = inverse.PointSensors.at(space, inverse.sensor_layout(space, 9, "grid"), "linear")
    times = np.array([0.1, 0.2, 0.3])
    prior = inverse.BiLaplacian(space, correlation_length=0.3, variance=0.1)
    forward, propagators = _dense_forward(model, times)
    gmat = np.concatenate([np.asarray(observation(jnp.asarray(p).T).T) for p in propagators])
    if truth is None:
        truth = prior.sample(jax.random.PRNGKey(seed), 1)[0] / np.sqrt(weight)
    clean = gmat @ truth
    sigma = noise * np.sqrt(np.mean(clean**2))
    rng = np.random.default_rng(seed)
    data = (clean + sigma * rng.standard_normal(clean.shape)).reshape(len(times), -1)
    parameters = inverse.ParameterMap(
        inverse.NodalField(n), inverse.INITIAL_CONDITION, dict(model.params)
    )
    options = {"forward": forward} if dense else {"forward": inverse.initial_condition_forward}
    problem = inverse.InverseProblem(
        model=model, times=times, parameters=parameters, observation=observation, data=data,
        sigma=sigma, regularizer=prior, weight=weight, solver={"tol": 1e-12}, **options,
    )  # fmt: skip
    return problem, gmat, truth


def _dense_posterior(problem, gmat):
    """Bayesian linear regression: posterior mean, covariance and log marginal likelihood."""
    n = gmat.shape[1]
    precision = problem.weight * np.asarray(jax.hessian(problem.regularizer)(jnp.zeros(n)))
    sigma = float(problem.sigma)
    d = np.asarray(problem.data).ravel()
    covariance = np.linalg.inv(gmat.T @ gmat / sigma**2 + precision)
    mean = covariance @ (gmat.T @ d / sigma**2)
    marginal = gmat @ np.linalg.solve(precision, gmat.T) + sigma**2 * np.eye(d.size)
    _, logdet = np.linalg.slogdet(marginal)
    evidence = -0.5 * d @ np.linalg.solve(marginal, d) - 0.5 * logdet
    evidence -= 0.5 * d.size * np.log(2 * np.pi)
    return mean, covariance, evidence


def _check_against_dense(problem, gmat, posterior):
    mean, covariance, evidence = _dense_posterior(problem, gmat)
    scale = np.abs(mean).max()
    assert np.abs(posterior.mean - mean).max() <= 1e-6 * scale
    std = np.sqrt(np.diag(covariance))
    assert np.abs(posterior.std() - std).max() <= 1e-6 * std.max()
    assert np.abs(posterior.covariance() - covariance).max() <= 1e-6 * np.abs(covariance).max()
    assert posterior.log_evidence == pytest.approx(evidence, abs=1e-6 * abs(evidence) + 1e-6)


@pytest.mark.parametrize("method", ["randomized", "lanczos"])
def test_linear_posterior_equals_bayesian_linear_regression(method):
    problem, gmat, _ = _linear_problem()
    n = problem.parameters.size
    # From a point far from the MAP: one Gauss-Newton step is the exact mean.
    start = np.full(n, 0.3)
    posterior = inverse.laplace_posterior(problem, start, method=method, newton_step=True)
    # 27 data < 64 unknowns: the misfit Hessian has rank 27 and both solvers see all of it.
    assert posterior.exact and posterior.eigenvalues.size <= problem.num_observations
    _check_against_dense(problem, gmat, posterior)
    # Field std through the parameterisation (identity here) equals the vector std.
    np.testing.assert_allclose(
        posterior.field_std(problem.parameters.field), posterior.std(), rtol=1e-10
    )
    assert posterior.effective_parameters == pytest.approx(
        np.sum(posterior.eigenvalues / (1 + posterior.eigenvalues))
    )


def test_gradient_difference_reuses_the_fits_program_and_equals_regression():
    """``hessian="gradient-difference"``: the fit's compiled gradient, differenced."""
    from pdeinv.inverse._optimize import _value_and_grad

    problem, gmat, _ = _linear_problem(cells=5)
    n = problem.parameters.size
    result = inverse.fit(problem, np.zeros(n), inverse.LBFGSB(max_iter=3))
    program = _value_and_grad(problem._objective_with_weight)
    compiled = program._cache_size()
    posterior = inverse.laplace_posterior(
        problem, np.asarray(result.x), hessian="gradient-difference", newton_step=True
    )
    assert program._cache_size() == compiled  # nothing compiled for the posterior
    assert posterior.hessian_kind == "gradient-difference" and posterior.exact
    # The gradient of a linear model is linear: its central difference is exact.
    _check_against_dense(problem, gmat, posterior)
    with pytest.raises(ValueError, match="uncertainty.hessian"):
        inverse.misfit_hessian(problem, np.zeros(n), hessian="exact")


@pytest.mark.slow
def test_linear_posterior_through_expm_multiply_equals_regression():
    problem, gmat, _ = _linear_problem(dense=False)
    posterior = inverse.laplace_posterior(problem, np.zeros(problem.parameters.size),
                                          newton_step=True)  # fmt: skip
    _check_against_dense(problem, gmat, posterior)


def test_truncated_posterior_overestimates_variance_and_samples_match_it():
    problem, gmat, _ = _linear_problem()
    exact = inverse.laplace_posterior(problem, np.zeros(problem.parameters.size))
    truncated = inverse.laplace_posterior(problem, np.zeros(problem.parameters.size), rank=5,
                                          oversampling=5)  # fmt: skip
    assert not truncated.exact
    # Dropping eigenvalues removes less variance: truncated std >= exact std.
    assert np.all(truncated.std() >= exact.std() - 1e-12)
    assert np.all(truncated.std() <= truncated.prior.variance() ** 0.5 + 1e-12)
    samples = exact.sample(np.random.default_rng(0), 4000)
    empirical = np.cov(samples.T)
    covariance = exact.covariance()
    # 4000 samples: relative error of a variance ~ sqrt(2/4000) = 2.2 %; 15 % cannot flake.
    np.testing.assert_allclose(np.diag(empirical), np.diag(covariance), rtol=0.15)


def _expm_taylor(a, squarings=8, degree=18):
    """``exp(a)`` by scaling and squaring of a Taylor polynomial: matrix products only.

    No LAPACK call, so ``vmap`` of it cannot meet jaxlib's CPU deadlock of batched
    LAPACK kernels inside loops (``jax.scipy.linalg.expm`` solves a Pade system);
    accurate to rounding for ``||a|| <= 2^squarings``.
    """
    a = a / 2.0**squarings
    term = result = jnp.eye(a.shape[0], dtype=a.dtype)
    for k in range(1, degree + 1):
        term = term @ a / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def _coarse_heat_problem():
    """Heat with a log-diffusivity on a 3x3 coarse grid of a 6x6 grid, dense ``expm`` forward."""
    space = grid((6, 6))
    n = space.num_nodes
    u0 = models.gaussian_bump(space, width=0.2)
    model = models.heat_fd(space, jnp.zeros(n), u0, bc="neumann")
    times = np.array([0.01, 0.02])
    matvec = model.matvec

    def forward(model, params, times_, **solver):
        matrix = jax.jacfwd(lambda u: matvec(u, params))(model.u0)
        return jnp.stack([_expm_taylor(t * matrix) @ model.u0 for t in times])

    parameters = inverse.ParameterMap(
        inverse.CoarseGrid.build(space, (3, 3)), "log_kappa", dict(model.params)
    )
    observation = inverse.FullField(space)
    truth = jnp.asarray(np.random.default_rng(0).normal(scale=0.3, size=9))
    clean = np.asarray(observation(forward(model, parameters.to_params(truth), times)))
    problem = inverse.InverseProblem(
        model=model, times=times, parameters=parameters, observation=observation,
        data=clean + 0.01 * np.random.default_rng(1).standard_normal(clean.shape), sigma=0.01,
        regularizer=inverse.make_regularizer("h1", space), weight=0.1, forward=forward,
    )  # fmt: skip
    return problem, np.asarray(truth) + 0.05


def _dense_gauss_newton(problem, m, prior):
    """Covariance and log evidence of the Gauss-Newton posterior from ``jax.jacrev``."""
    residual = np.asarray(problem.weighted_residual(jnp.asarray(m))).ravel()
    jac = np.asarray(jax.jacrev(lambda x: problem.weighted_residual(x).ravel())(jnp.asarray(m)))
    precision = jac.T @ jac + prior.precision
    covariance = np.linalg.inv(precision)
    _, logdet_post = np.linalg.slogdet(precision)
    _, logdet_prior = np.linalg.slogdet(prior.precision)
    sigma = np.broadcast_to(np.asarray(problem.sigma, float), np.shape(problem.data))
    evidence = (
        -0.5 * residual @ residual - prior.quadratic(m) - 0.5 * (logdet_post - logdet_prior)
        - 0.5 * residual.size * np.log(2 * np.pi) - np.sum(np.log(sigma))
    )  # fmt: skip
    return covariance, evidence


@pytest.mark.slow
def test_exact_laplace_on_nonlinear_problem_when_rank_reaches_unknowns():
    """Products (randomized, rank 9 = unknowns) give the dense GN posterior."""
    problem, m = _coarse_heat_problem()
    posterior = inverse.laplace_posterior(problem, m, rank=9, oversampling=0, method="randomized")
    assert posterior.exact and posterior.method == "randomized"
    covariance, _ = _dense_gauss_newton(problem, m, posterior.prior)
    # The matrix-free Gauss-Newton product (finite-difference J v) is accurate to ~1e-6.
    np.testing.assert_allclose(posterior.covariance(), covariance, rtol=1e-4, atol=1e-8)
    # h1 is improper: the nugget makes the constant mode proper (prior std of the mean).
    assert np.all(np.isfinite(posterior.prior.variance()))


def test_jacobian_method_is_the_dense_gauss_newton_posterior_and_truncation_is_bounded():
    """``method="jacobian"`` (forward differences of the model) on a nonlinear problem."""
    problem, m = _coarse_heat_problem()
    # auto: 9 unknowns, a tiny Jacobian: the Jacobian, every pair (exact).
    posterior = inverse.laplace_posterior(problem, m)
    assert posterior.method == "jacobian" and posterior.exact
    assert posterior.num_residual_evaluations == 2 * 9 + 1
    assert posterior.num_hessian_products == 0
    assert posterior.hessian_kind == "gauss-newton-jacobian"
    covariance, evidence = _dense_gauss_newton(problem, m, posterior.prior)
    # Central differences with the step tol^(1/3) (tol 1e-8): truncation error about
    # tol^(2/3) = 5e-6 relative (2.5e-6 of the largest entry measured).
    scale = np.abs(covariance).max()
    np.testing.assert_allclose(posterior.covariance(), covariance, rtol=0, atol=2e-5 * scale)
    assert posterior.log_evidence == pytest.approx(evidence, abs=1e-6 * abs(evidence))
    # Truncation (rank r < n) against the exact posterior: each variance grows by at most
    # lambda_{r+1} / (1 + lambda_{r+1}) of its prior value; the log evidence by exactly
    # 1/2 sum_{i>r} log(1 + lambda_i), at most (n - r)/2 log(1 + lambda_{r+1}).
    lam = posterior.eigenvalues
    prior_variance = posterior.prior.variance()
    for r in (1, 3, 6):
        truncated = inverse.laplace_posterior(problem, m, rank=r, method="jacobian")
        assert not truncated.exact and truncated.eigenvalues.size == r
        np.testing.assert_allclose(truncated.eigenvalues, lam[:r], rtol=1e-12)
        excess = truncated.variance() - posterior.variance()
        assert np.all(excess >= -1e-12 * prior_variance)
        assert np.all(excess <= lam[r] / (1 + lam[r]) * prior_variance * (1 + 1e-9))
        gap = truncated.log_evidence - posterior.log_evidence
        assert gap == pytest.approx(0.5 * np.sum(np.log1p(lam[r:])), rel=1e-9)
        assert 0 <= gap <= 0.5 * (lam.size - r) * np.log1p(lam[r]) * (1 + 1e-9)


def test_auto_method_choice_and_errors(monkeypatch):
    from pdeinv.inverse._laplace import _posterior

    problem, m = _coarse_heat_problem()
    assert inverse._laplace.choose_method(problem, 9) == "jacobian"
    # gradient differences are products of another Hessian: never the Jacobian
    assert inverse._laplace.choose_method(problem, 9, hessian="gradient-difference") == (
        "randomized"
    )
    # a Jacobian over the memory limit, or far more columns than the products: products
    monkeypatch.setattr(_posterior, "JACOBIAN_BYTES", 8 * 9 * problem.num_observations - 1)  # x64
    assert inverse._laplace.choose_method(problem, 9) == "randomized"
    monkeypatch.undo()
    monkeypatch.setattr(_posterior, "JACOBIAN_COLUMNS_PER_PRODUCT", 0.5)
    assert inverse._laplace.choose_method(problem, 2, oversampling=0) == "randomized"
    with pytest.raises(ValueError, match="uncertainty.method = jacobian forms the Gauss-Newton"):
        inverse.laplace_posterior(problem, m, method="jacobian", hessian="gradient-difference")
    with pytest.raises(ValueError, match="uncertainty.method must be one of"):
        inverse.laplace_posterior(problem, m, method="arnoldi")


# -- the bilaplacian prior -----------------------------------------------------------------


def test_matern_coefficients_give_the_variance_formula():
    for dim in (1, 2, 3):
        delta, gamma = matern_coefficients(dim, 0.3, 2.0)
        nu = 2 - dim / 2
        assert np.sqrt(8 * nu * gamma / delta) == pytest.approx(0.3)
        variance = scipy.special.gamma(nu) / (
            scipy.special.gamma(nu + dim / 2) * (4 * np.pi) ** (dim / 2) * delta**nu
            * gamma ** (dim / 2)
        )  # fmt: skip
        assert variance == pytest.approx(2.0)
    with pytest.raises(ValueError, match="regularization.correlation_length"):
        matern_coefficients(2, 0.0, 1.0)
    with pytest.raises(ValueError, match="regularization.prior_variance"):
        matern_coefficients(2, 0.2, -1.0)


def test_bilaplacian_prior_variance_correlation_and_samples():
    space = grid((24, 24))
    n = space.num_nodes
    prior = inverse.BiLaplacian(space, correlation_length=0.3, variance=2.0, mean=0.5)
    # Its Hessian is the precision A M^-1 A of the sparse operator.
    a = prior.operator().toarray()
    precision = a @ np.diag(1.0 / lumped_mass(space)) @ a
    hessian = np.asarray(jax.hessian(prior)(jnp.zeros(n)))
    np.testing.assert_allclose(hessian, precision, rtol=1e-10, atol=1e-10 * precision.max())
    covariance = np.linalg.inv(precision)
    center = int(np.argmin(np.sum((space.points - 0.5) ** 2, axis=1)))
    # Pointwise variance at an interior node: the key, up to the grid's discretisation.
    assert covariance[center, center] == pytest.approx(2.0, rel=0.1)
    # Correlation at distance rho: the Matern (nu = 1) value (kr) K1(kr), kr = sqrt(8).
    other = int(np.argmin(np.sum((space.points - [0.8, 0.5]) ** 2, axis=1)))
    distance = np.linalg.norm(space.points[other] - space.points[center])
    kr = np.sqrt(8.0) * distance / 0.3
    correlation = covariance[center, other] / np.sqrt(
        covariance[center, center] * covariance[other, other]
    )
    assert correlation == pytest.approx(kr * kv(1, kr), abs=0.03)
    # Samples (sparse LU square root): mean and variance, 4000 samples, seeded.
    samples = prior.sample(jax.random.PRNGKey(0), 4000)
    assert samples.shape == (4000, n)
    assert samples[:, center].var() == pytest.approx(covariance[center, center], rel=0.15)
    assert samples[:, center].mean() == pytest.approx(0.5, abs=0.15)


# -- calibration and evidence --------------------------------------------------------------


def _coverage_over_seeds(seeds):
    inside = []
    for seed in seeds:
        problem, _, truth = _linear_problem(seed=seed)
        posterior = inverse.laplace_posterior(
            problem, np.zeros(problem.parameters.size), newton_step=True, seed=seed
        )
        inside.append(np.abs(truth - posterior.mean) <= 2 * posterior.std())
    return float(np.mean(inside))


@pytest.mark.slow
def test_two_sigma_coverage_over_20_seeds_is_calibrated():
    # Truth drawn from the prior: each node is inside with probability 0.954.
    assert 0.9 <= _coverage_over_seeds(range(20)) <= 0.99


def test_two_sigma_coverage_over_a_few_seeds():
    assert 0.85 <= _coverage_over_seeds(range(2)) <= 1.0


def test_evidence_prefers_the_weight_the_truth_was_drawn_with():
    # Truth drawn from the prior at weight 1: the evidence peaks there, not at 1/30 or 30.
    problem, _, _ = _linear_problem(cells=9, seed=3, noise=0.002)
    start = np.zeros(problem.parameters.size)
    # A linear model: one misfit Hessian (and gradient) serves every weight.
    hessian = inverse.misfit_hessian(problem, start)
    evidences = {
        w: inverse.laplace_posterior(
            problem, start, weight=w, newton_step=True, hessian=hessian
        ).log_evidence
        for w in (30.0, 1.0, 1.0 / 30.0)
    }
    assert max(evidences, key=evidences.get) == 1.0


@pytest.mark.slow
def test_fit_evidence_sweeps_weights_and_keeps_the_best():
    problem, _, _ = _linear_problem(cells=9, seed=3, noise=0.002)
    options = {"newton_step": True}
    evidences = {
        w: inverse.laplace_posterior(
            problem, np.zeros(problem.parameters.size), weight=w, **options
        ).log_evidence
        for w in (30.0, 1.0, 1.0 / 30.0)
    }
    result = inverse.fit_evidence(
        problem, np.zeros(problem.parameters.size), [30.0, 1.0, 1.0 / 30.0],
        inverse.LBFGSB(max_iter=300, gtol=1e-10), posterior_options=options,
    )  # fmt: skip
    assert result.weight == 1.0
    assert result.log_evidences[1] == pytest.approx(evidences[1.0], rel=1e-6)


def test_tv_prior_has_no_evidence_and_cannot_choose_the_weight():
    problem, _, _ = _linear_problem()
    tv = inverse.make_regularizer("tv", problem.model.space, epsilon=0.1)
    import dataclasses

    problem = dataclasses.replace(problem, regularizer=tv)
    with pytest.raises(ValueError, match="choose_weight = evidence"):
        inverse.fit_evidence(problem, np.zeros(problem.parameters.size), [1.0])
    posterior = inverse.laplace_posterior(problem, np.zeros(problem.parameters.size), rank=5)
    assert posterior.log_evidence is None


def test_coverage_counts_nodes_within_two_std():
    assert inverse.coverage([0.0, 1.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(
        2 / 3
    )
