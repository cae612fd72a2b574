"""Step control: one Krylov decomposition per step, its propagator, and the step size.

Shared by the forward sweep (:mod:`._forward`), the replay of dropped states and
the adjoint's sub-steps (:mod:`._reverse`); see docs/design.md#error-control-and-step-size
and docs/design.md#krylov-size-control.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from ..krylov._arnoldi import arnoldi_process
from ..krylov._common import safe_norm
from ..krylov._engine import iterate, iterate_until
from ..krylov._lanczos import bordered_lanczos_process, lanczos_process
from ..krylov._skew import skew_lanczos_process
from ._config import _GROW_MAX, _MAX_TRIALS, _SAFETY, _SHRINK_MIN, _Config
from ._small import KrylovPropagator


class _Projection(NamedTuple):
    """A step's Krylov decomposition without its basis: what its propagator needs."""

    small: Any  # (k, k) projected matrix H, zero past `size`
    norm: Any  # ||u|| of the start vector
    residual_norm: Any  # ||r|| = h_{k+1,k}
    size: Any  # dimension built (int32)


def _decompose(cfg: _Config, apply, u, stop=None):
    """Krylov basis of ``u`` as ``(k, n)`` rows and its :class:`_Projection`.

    ``stop(small, size, residual_norm) -> bool``, checked every ``cfg.chunk``
    steps, may end the process before ``krylov_dim`` (Krylov-size control);
    """
    basis, projection, _, _ = _decompose_checked(cfg, apply, u, stop)
    return basis, projection


def _decompose_checked(cfg: _Config, apply, u, stop=None):
    """:func:`_decompose`, the skewness the skew process measured (0 for the others)
    and the residual vector ``r`` (the direction of the leading error term)."""
    k = cfg.krylov_dim
    process = make_process(cfg, apply)
    if stop is None or cfg.chunk == k:
        (dec, skewness), size = iterate(process, u, k), jnp.asarray(k, jnp.int32)
    else:
        (dec, skewness), size = iterate_until(process, u, k, cfg.chunk, stop)
    projection = _Projection(dec.small, dec.norm, safe_norm(dec.residual), size)
    return dec.basis, projection, skewness, dec.residual


def _weighted_scale(cfg: _Config, u, residual, beta):
    """Norm the step's error is measured against: ``beta = ||u||``, or less with ``cfg.error_rows``.

    The leading term of a Krylov step's error is along the residual ``r``, so
    the error of the first ``m = cfg.error_rows`` entries is ``err ||r[:m]|| /
    ||r||``.  Holding that to ``tol`` relative to ``||u[:m]||`` as well as the
    whole error to ``tol`` relative to ``||u||`` is one test against
    ``min(||u||, ||u[:m]|| ||r|| / ||r[:m]||)``.  While ``u[:m]`` is zero (a
    tangent started from ``dv = 0``) the whole state's test alone applies.
    """
    if not cfg.error_rows:
        return beta
    m = cfg.error_rows
    top = jnp.linalg.norm(u[:m])
    r_top = jnp.linalg.norm(residual[:m])
    r_all = jnp.linalg.norm(residual)
    weighted = top * r_all / jnp.where(r_top > 0, r_top, 1.0)
    return jnp.where((top > 0) & (r_top > 0), jnp.minimum(beta, weighted), beta)


def make_process(cfg: _Config, apply):
    """The Krylov process of ``cfg.method`` for the operator ``apply``."""
    if cfg.skew:
        return skew_lanczos_process(apply)
    if cfg.symmetric:
        return lanczos_process(apply, reorthogonalize=cfg.reorthogonalize)
    if cfg.method == "affine-lanczos":
        return bordered_lanczos_process(apply)
    return arnoldi_process(apply, reorthogonalize=cfg.reorthogonalize, window=cfg.window)


def _propagator(cfg: _Config, projection: _Projection) -> KrylovPropagator:
    small, beta, residual_norm, size = projection
    return KrylovPropagator(
        small,
        beta,
        residual_norm,
        symmetric=cfg.symmetric,
        skew=cfg.skew,
        bordered=cfg.bordered,
        size=size,
    )


def _stop_at_step(cfg: _Config, tau, tol_rate, clipped, min_size=0, max_size=None):
    """Krylov-size control: stop once the step ``tau`` meets the tolerance.

    Only for a step cut short by an output time or the end of the interval
    (``clipped``, decided by the caller; never the first forward step, which
    has no step-size history, see ``_forward`` and ``_reverse._sub_step``):
    there the full dimension would buy a longer step that cannot be taken.
    Otherwise the largest dimension is the cheapest per unit of time (for stiff
    operators the step grows faster than linearly with the dimension), so the
    process runs to ``krylov_dim``.

    Two tests must pass at a dimension ``m``: the step-size controller's
    residual estimate (:func:`_largest_step`, so the step is then accepted as
    is), and the change of ``exp(tau H) e1`` since the previous check
    (dimension ``m - chunk``), an estimate of the error of the smaller space
    and so a conservative one for ``m``.  The residual estimate alone can
    accept a space that has not started to converge (measured: a dense
    non-normal 25 x 25 matrix, estimate 9e-9 at m = 15, true error 2e-4).
    Each test costs two exponentials of the padded ``(k, k)`` matrix, so tests
    run only at dimensions ``min_size <= m < max_size`` (default: below
    ``krylov_dim``, where the process ends anyway).
    """
    chunk = cfg.chunk
    if max_size is None:
        max_size = cfg.krylov_dim

    def stop(small, size, residual_norm):
        def meets(_):
            prop = _propagator(cfg, _Projection(small, 1.0, residual_norm, size))
            coef, err = prop.coefficients(tau)
            index = jnp.arange(small.shape[0])
            inner = (index < size - chunk)[:, None] & (index < size - chunk)[None, :]
            smaller = _propagator(cfg, _Projection(jnp.where(inner, small, 0), 1.0, 0.0, None))
            change = jnp.linalg.norm(coef - smaller.exp_times(tau))
            allowed = tol_rate * tau
            return (err <= allowed) & (change <= allowed)

        test = clipped & (size >= min_size) & (size < jnp.minimum(max_size, cfg.krylov_dim))
        return lax.cond(test, meets, lambda _: jnp.zeros((), bool), None)

    return stop


def _stop_at_size(target):
    """Rebuild a decomposition of a recorded size."""
    return lambda small, size, residual_norm: size >= target


def _largest_step(cfg: _Config, prop: KrylovPropagator, tau_try, tol_rate, scale=None):
    """Largest accepted ``tau <= tau_try`` and the suggested next step size.

    Accept when ``err(tau) <= tol_rate * scale * tau`` (``scale``: ``beta``
    unless given, see :func:`_weighted_scale`); shrink by the asymptotic
    model ``err ~ tau^(k)`` otherwise.  Returns ``(tau, exp(tau H) e1, err, tau_next, trials, ok)``.
    """
    dtype = prop.hessenberg.dtype
    tiny = jnp.finfo(dtype).tiny

    def ratio_at(tau):
        coef, err = prop.coefficients(tau)
        allowed = tol_rate * (prop.beta if scale is None else scale) * tau
        ratio = jnp.where(err == 0, 0.0, err / jnp.maximum(allowed, tiny))
        ratio = jnp.where(jnp.isfinite(ratio) & jnp.all(jnp.isfinite(coef)), ratio, jnp.inf)
        return coef, ratio, err

    def shrink(ratio):
        factor = _SAFETY * ratio ** (-1.0 / cfg.order)
        factor = jnp.where(jnp.isfinite(factor), factor, _SHRINK_MIN)
        return jnp.clip(factor, _SHRINK_MIN, _SAFETY)

    def cond(state):
        tau, _, ratio, _, trials = state
        return (ratio > 1.0) & (trials < _MAX_TRIALS) & (tau > 0)

    def body(state):
        tau, _, ratio, _, trials = state
        tau = tau * shrink(ratio)
        coef, ratio, err = ratio_at(tau)
        return tau, coef, ratio, err, trials + 1

    coef0, ratio0, err0 = ratio_at(tau_try)
    tau, coef, ratio, err, trials = lax.while_loop(
        cond, body, (tau_try, coef0, ratio0, err0, jnp.zeros((), jnp.int32))
    )
    ok = ratio <= 1.0
    grow = jnp.where(ratio > 0, _SAFETY * ratio ** (-1.0 / cfg.order), _GROW_MAX)
    tau_next = tau * jnp.clip(grow, 1.0, _GROW_MAX)
    return tau, coef, err, tau_next, trials, ok


def _apply(matvec, params, x):
    return matvec(x, params)


def _advance(cfg: _Config, apply, u, tau, size):
    """One forward step of known length ``tau`` and Krylov size (as the forward sweep took it)."""
    basis, projection = _decompose(cfg, apply, u, _stop_at_size(size))
    prop = _propagator(cfg, projection)
    coef, _ = prop.coefficients(tau)
    return prop.beta * (coef @ basis)
