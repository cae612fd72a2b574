"""``uncertainty.enabled``: the Laplace posterior of a finished fit, as run-folder outputs.

The computation is :func:`pdeinv.inverse.laplace_posterior`; this module picks its
options from the config and turns the posterior into ``result.npz`` arrays,
``fields.vtu`` point data and ``metrics.json`` entries (docs/uncertainty.md).
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np

from .. import inverse


@dataclasses.dataclass
class Uncertainty:
    """What a run folder gains from the posterior."""

    arrays: dict  # result.npz
    point_data: dict  # fields.vtu
    metrics: dict  # metrics.json
    posterior: inverse.LaplacePosterior


def posterior_options(experiment) -> dict:
    """Keyword arguments of :func:`pdeinv.inverse.laplace_posterior` from ``uncertainty.*``."""
    config = experiment.config
    options = config.uncertainty
    return {
        "rank": options.rank,
        "method": options.method,
        "oversampling": options.oversampling,
        "nugget": options.nugget,
        "center": experiment.prior_center,
        "batch_size": options.batch_size,
        "hessian": options.hessian,
        "seed": config.seed,
        # A linear model (the initial state as unknown): one Gauss-Newton step from the
        # fit is the exact posterior mean, whatever the optimiser's tolerance.
        "newton_step": not experiment.log_field,
    }


def std_field_name(experiment) -> str:
    """Name of the pointwise std field (``log_kappa_std``, ``log_c_std``, ...)."""
    return f"{experiment.problem.parameters.field_name}_std"


def compute_uncertainty(experiment, outcome) -> Uncertainty:
    """Laplace posterior at the fitted point (or the one ``choose_weight: evidence`` kept)."""
    start = time.perf_counter()
    problem = experiment.problem
    config = experiment.config
    options = posterior_options(experiment)
    evidence = outcome.evidence
    if evidence is not None and evidence.posterior is not None:
        posterior = evidence.posterior
    else:
        posterior = inverse.laplace_posterior(
            problem, np.asarray(outcome.result.x, dtype=float), weight=outcome.weight, **options
        )
    field = problem.parameters.field
    std_field = posterior.field_std(field)
    mean_field = np.asarray(field(jnp.asarray(posterior.mean, experiment.dtype)), dtype=float)
    num_samples = config.uncertainty.samples
    rng = np.random.default_rng(config.seed)
    samples = posterior.sample(rng, num_samples)
    sample_fields = np.stack(
        [np.asarray(field(jnp.asarray(s, experiment.dtype)), dtype=float) for s in samples]
    ) if num_samples else np.zeros((0, experiment.space.num_nodes))  # fmt: skip
    if experiment.log_field:
        sample_fields = np.exp(sample_fields)
    metrics = {
        "log_evidence": posterior.log_evidence,
        "effective_parameters": posterior.effective_parameters,
        "uncertainty": {
            "rank": int(posterior.eigenvalues.size),
            "method": posterior.method,
            "exact": posterior.exact,
            "hessian_products": posterior.num_hessian_products,
            "residual_evaluations": posterior.num_residual_evaluations,
            "hessian_kind": posterior.hessian_kind,
            "eigenvalues_above_1": int(np.sum(posterior.eigenvalues > 1.0)),
            "smallest_eigenvalue_kept": float(posterior.eigenvalues[-1]),
            "posterior_std_field_mean": float(np.mean(std_field)),
            "weight": float(outcome.weight),
            "time_s": time.perf_counter() - start,
        },
    }
    if experiment.true_field is not None:
        true = np.asarray(experiment.true_field, dtype=float)
        true_field = np.log(true) if experiment.log_field else true
        metrics["coverage_2sigma"] = inverse.coverage(true_field, mean_field, std_field)
    arrays = {
        "posterior_std": posterior.std(),
        "posterior_std_field": std_field,
        "posterior_mean_field": mean_field,
        "posterior_samples": sample_fields,
        "hessian_eigenvalues": posterior.eigenvalues,
        "prior_std_field": _prior_std_field(posterior, field),
        "log_field": np.asarray(experiment.log_field),
    }
    return Uncertainty(arrays, {std_field_name(experiment): std_field}, metrics, posterior)


def _prior_std_field(posterior, field) -> np.ndarray:
    """Pointwise prior std of the field (the posterior with no data), for comparison."""
    prior_only = dataclasses.replace(
        posterior, eigenvalues=np.zeros(0), eigenvectors=np.zeros((posterior.prior.size, 0))
    )
    return prior_only.field_std(field)


def evidence_metrics(outcome) -> dict:
    """``metrics.json`` entries of ``choose_weight: evidence``."""
    evidence = outcome.evidence
    if evidence is None:
        return {}
    return {
        "evidence": {
            "weights_tried": evidence.weights,
            "log_evidences": evidence.log_evidences,
            "misfits": evidence.misfits,
            "chosen_weight": evidence.weight,
        }
    }
