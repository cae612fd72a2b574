"""Choosing the regularisation weight by the Laplace evidence."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .._optimize import IterationInfo, OptimizeResult
from .._problem import WarmStartedFits
from ._posterior import LaplacePosterior, laplace_posterior

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
    evidences, posteriors = [], []
    sweep = WarmStartedFits(
        problem, x0, weights, optimizer,
        callback=callback, on_weight=on_weight, stop=stop, checkpoint=checkpoint,
    )  # fmt: skip
    for w, result in sweep:
        if result.status == 3:  # interrupted: no posterior for a half-finished fit
            break
        posterior = laplace_posterior(problem, np.asarray(result.x), weight=float(w), **options)
        posteriors.append(posterior)
        evidences.append(posterior.log_evidence)
        best = int(np.argmax(evidences))
        if len(evidences) - 1 - best >= 2:
            break
    tried, misfits, results = sweep.tried, sweep.misfits, sweep.results
    if not posteriors:
        return EvidenceResult(results[-1], tried[-1], None, np.asarray(tried),
                              np.asarray([]), np.asarray(misfits), tuple(results))  # fmt: skip
    best = int(np.argmax(evidences))
    return EvidenceResult(
        results[best], tried[best], posteriors[best], np.asarray(tried[: len(evidences)]),
        np.asarray(evidences), np.asarray(misfits), tuple(results),
    )  # fmt: skip
