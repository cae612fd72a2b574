"""Adaptive Krylov integrator for ``exp(t A(params)) v`` with its own gradient rule.

Forward: Expokit-style stepping.  Each step builds a Krylov decomposition of
dimension ``krylov_dim`` from the current state and takes the largest step ``tau``
whose a posteriori error estimate (integral of the Krylov residual) is below
``tol * ||u_j|| * tau / t_final``.  Trying another ``tau`` costs only small-matrix
work, so rejections cost no matvecs.  Steps end exactly at every output time.

Reverse (default, ``gradient="two-sided"``): the continuous adjoint

    dL/dparams = int_0^T lam(s)^T (dA/dparams) u(s) ds,   dL/dv = lam(0),
    lam(s) = exp((T - s) A^T) dL/du(T)

with both sides approximated by Krylov (see docs/design.md#the-two-sided-adjoint): the forward
side of a step comes from its stored trajectory basis (``checkpoint="trajectory"``,
a few vectors spanning ``u(s)`` on the step, used where an a posteriori check
allows) or is recomputed from the checkpoint ``u_j``, the backward side is
a Krylov decomposition of ``A^T`` from ``lam`` with its own error control and
sub-steps, and each sub-step's integral is a small block exponential.  The
parameter gradient of a step is one batched VJP of ``matvec``.

``gradient="discrete"`` is the exact derivative of the Krylov approximation
(the adjoint of Krämer et al. 2024 applied step by step), kept for comparison.

Forward mode and the wiring of both rules into JAX live in ``_rules.py``
(docs/design.md#forward-mode).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._threads import SLOW_KRYLOV_DIM, blas_threads
from ..krylov._arnoldi import arnoldi_process
from ..krylov._common import (
    check_finite,
    check_finite_params,
    check_matvec,
    check_vector,
    params_cotangent,
    params_cotangent_low_rank,
    transpose_matvec,
)
from ..krylov._engine import iterate, iterate_until
from ..krylov._lanczos import bordered_lanczos_process, lanczos_process
from ..krylov._skew import skew_lanczos_process, skewness_tolerance
from ._small import KrylovPropagator, _svd, trajectory_basis, two_sided_block

PyTree = Any

_WHERE = "expm_multiply"
METHODS = ("arnoldi", "lanczos", "skew-lanczos", "affine-lanczos")
GRADIENTS = ("two-sided", "discrete")
CHECKPOINTS = ("trajectory", "states", "bases")
# Bounds of the step-size controller (factor per trial, factor to the next step).
_SHRINK_MIN, _GROW_MAX, _SAFETY = 0.01, 5.0, 0.9
_MAX_TRIALS = 60
# States kept for the gradient by default (``checkpoints=None``).
DEFAULT_CHECKPOINTS = 32
# Singular values of a backward sub-step's quadrature matrix below
# ``tol * _RANK_TOL`` times the largest are dropped (see _low_rank_cotangent).
_RANK_TOL = 1e-3
# The "trajectory" policy keeps, for each of the first steps, an orthonormal
# basis of ``_TRAJECTORY_RANK`` vectors spanning the step's trajectory u(s)
# (plus its start state and small matrix), in at most ``_TRAJECTORY_BYTES``.
_TRAJECTORY_RANK = 8
_TRAJECTORY_BYTES = 8 * 2**20
_TRAJECTORY_TOL = 1e-2


class ExpmStats(NamedTuple):
    """Solver statistics of one forward call of :func:`expm_multiply_info`.

    Attributes
    ----------
    num_steps
        Accepted Krylov steps.
    num_rejected
        Step-size reductions (each costs small-matrix work only, no matvec).
    num_matvecs
        Products with ``A``.
    error_estimate
        Sum of the accepted local error estimates divided by ``||v||`` (an
        estimate of the relative error of the final state).
    """

    num_steps: Any
    num_rejected: Any
    num_matvecs: Any
    error_estimate: Any


class _Projection(NamedTuple):
    """A step's Krylov decomposition without its basis: what its propagator needs."""

    small: Any  # (k, k) projected matrix H, zero past `size`
    norm: Any  # ||u|| of the start vector
    residual_norm: Any  # ||r|| = h_{k+1,k}
    size: Any  # dimension built (int32)


class _ForwardRecord(NamedTuple):
    """What the forward sweep keeps for the reverse (and tangent) sweeps."""

    states: Any  # (checkpoints, n) step-start states, thinned by stride (see _keep_state)
    step_sizes: Any  # (max_steps,) tau of every step
    krylov_sizes: Any  # (max_steps,) Krylov dimension every step built
    num_steps: Any  # steps taken
    output_steps: Any  # (len(t),) steps taken when each output time was reached
    # The checkpoint policy's own buffers: "bases": (bases, _Projection of buffers);
    # "trajectory": the trajectory buffers of _keep_trajectory; "states": None.
    policy_buffers: Any
    stride: Any  # steps between kept states


class _BackwardCarry(NamedTuple):
    """State of the two-sided backward sweep between forward steps."""

    j: Any  # steps not yet swept (the sweep is at the start of step j)
    lam: Any  # adjoint state at that time
    grad: Any  # parameter gradient accumulated so far (pytree like params)
    sigma_suggest: Any  # step size the adjoint's controller suggests next
    failed: Any  # no sub-step met the tolerance
    replay: Any  # replayed states (see _reverse_states)


class _SubStep(NamedTuple):
    """State of the adjoint's sub-steps inside one forward step."""

    s_end: Any  # the sub-step ends here (time from the forward step's start)
    lam: Any
    grad: Any
    sigma_suggest: Any
    failed: Any
    step_state: Any  # the forward side's own state (see sweep)


@dataclasses.dataclass(frozen=True)
class _Config:
    method: str
    krylov_dim: int
    max_steps: int
    gradient: str
    reorthogonalize: bool
    checkpoint: str = "states"
    # States kept for the gradient (see _thin); equal to max_steps: never thinned.
    checkpoints: int = 0
    # "trajectory" policy: steps with a stored trajectory basis (the first ones)
    # and the basis size; 0 when the policy is off or no slot fits the budget.
    trajectory_slots: int = 0
    trajectory_rank: int = 0

    @property
    def replay_length(self) -> int:
        """Largest stride between kept states (a power of two), the replay buffer's size."""
        stride = 1
        while self.checkpoints * stride < self.max_steps:
            stride *= 2
        return stride

    @property
    def symmetric(self) -> bool:
        return self.method == "lanczos"

    @property
    def adjoint(self) -> _Config:
        """Configuration of the backward (adjoint) Krylov processes.

        For ``"affine-lanczos"`` the adjoint state keeps a zero last entry (see
        :func:`_backward_two_sided`), on which ``A_aug^T`` acts as the
        symmetric ``A``: plain Lanczos.
        """
        if self.method == "affine-lanczos":
            return dataclasses.replace(self, method="lanczos")
        return self

    @property
    def skew(self) -> bool:
        return self.method == "skew-lanczos"

    @property
    def chunk(self) -> int:
        """Steps between Krylov-size checks: a divisor of ``krylov_dim`` near 5.

        ``krylov_dim`` itself (no early stop) when it has none in 3..8, when
        the basis is reorthogonalised Lanczos (no chunked variant), and for the
        discrete adjoint (it differentiates full-size steps).
        """
        k = self.krylov_dim
        if (self.symmetric and self.reorthogonalize) or self.gradient == "discrete":
            return k
        for d in (5, 6, 4, 7, 8, 3):
            if k % d == 0 and d < k:
                return d
        return k

    @property
    def order(self) -> int:
        return max(self.krylov_dim - 1, 1)


def _decompose(cfg: _Config, apply, u, stop=None):
    """Krylov basis of ``u`` as ``(k, n)`` rows and its :class:`_Projection`.

    ``stop(small, size, residual_norm) -> bool``, checked every ``cfg.chunk``
    steps, may end the process before ``krylov_dim`` (Krylov-size control);
    """
    basis, projection, _ = _decompose_checked(cfg, apply, u, stop)
    return basis, projection


def _decompose_checked(cfg: _Config, apply, u, stop=None):
    """:func:`_decompose` and the skewness the skew process measured (0 for the others)."""
    k = cfg.krylov_dim
    process = make_process(cfg, apply)
    if stop is None or cfg.chunk == k:
        (dec, skewness), size = iterate(process, u, k), jnp.asarray(k, jnp.int32)
    else:
        (dec, skewness), size = iterate_until(process, u, k, cfg.chunk, stop)
    projection = _Projection(dec.small, dec.norm, jnp.linalg.norm(dec.residual), size)
    return dec.basis, projection, skewness


def make_process(cfg: _Config, apply):
    """The Krylov process of ``cfg.method`` for the operator ``apply``."""
    if cfg.skew:
        return skew_lanczos_process(apply)
    if cfg.symmetric:
        return lanczos_process(apply, reorthogonalize=cfg.reorthogonalize)
    if cfg.method == "affine-lanczos":
        return bordered_lanczos_process(apply)
    return arnoldi_process(apply, reorthogonalize=cfg.reorthogonalize)


def _propagator(cfg: _Config, projection: _Projection) -> KrylovPropagator:
    small, beta, residual_norm, size = projection
    return KrylovPropagator(
        small, beta, residual_norm, symmetric=cfg.symmetric, skew=cfg.skew, size=size
    )


def _stop_at_step(cfg: _Config, tau, tol_rate, clipped):
    """Krylov-size control: stop once the step ``tau`` meets the tolerance.

    Only for a step cut short by an output time or the end of the interval
    (``clipped``, and never the first step, which has no step-size history):
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
    """
    chunk = cfg.chunk

    def stop(small, size, residual_norm):
        def meets(_):
            prop = KrylovPropagator(
                small, 1.0, residual_norm, symmetric=cfg.symmetric, skew=cfg.skew, size=size
            )
            coef, err = prop.coefficients(tau)
            index = jnp.arange(small.shape[0])
            inner = (index < size - chunk)[:, None] & (index < size - chunk)[None, :]
            smaller = KrylovPropagator(
                jnp.where(inner, small, 0), 1.0, 0.0, symmetric=cfg.symmetric, skew=cfg.skew
            )
            change = jnp.linalg.norm(coef - smaller.exp_times(tau))
            allowed = tol_rate * tau
            return (err <= allowed) & (change <= allowed)

        return lax.cond(clipped, meets, lambda _: jnp.zeros((), bool), None)

    return stop


def _stop_at_size(target):
    """Rebuild a decomposition of a recorded size."""
    return lambda small, size, residual_norm: size >= target


def _largest_step(cfg: _Config, prop: KrylovPropagator, tau_try, tol_rate):
    """Largest accepted ``tau <= tau_try`` and the suggested next step size.

    Accept when ``err(tau) <= tol_rate * beta * tau``; shrink by the asymptotic
    model ``err ~ tau^(k)`` otherwise.  Returns ``(tau, exp(tau H) e1, err, tau_next, trials, ok)``.
    """
    dtype = prop.hessenberg.dtype
    tiny = jnp.finfo(dtype).tiny

    def ratio_at(tau):
        coef, err = prop.coefficients(tau)
        allowed = tol_rate * prop.beta * tau
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


def _forward(cfg: _Config, matvec, v, params, ts, tol, record: bool):
    """Adaptive forward sweep.  Returns ``(ys, stats, failed, record)``."""
    n = v.shape[0]
    dtype = v.dtype
    apply = functools.partial(_apply, matvec, params)
    t_final = ts[-1]
    tol_rate = (tol / jnp.where(t_final > 0, t_final, 1.0)).astype(dtype)

    carry = dict(
        u=v,
        t=jnp.zeros((), ts.dtype),
        tau_suggest=jnp.asarray(jnp.inf, ts.dtype),
        j=jnp.zeros((), jnp.int32),
        rejected=jnp.zeros((), jnp.int32),
        matvecs=jnp.zeros((), jnp.int32),
        err_sum=jnp.zeros((), dtype),
        failed=jnp.zeros((), bool),
        skewness=jnp.zeros((), dtype),
    )
    k = cfg.krylov_dim
    if record:
        carry["us"] = jnp.zeros((cfg.checkpoints, n), dtype)
        carry["stride"] = jnp.ones((), jnp.int32)
        carry["taus"] = jnp.zeros((cfg.max_steps,), ts.dtype)
        carry["sizes"] = jnp.zeros((cfg.max_steps,), jnp.int32)
        if cfg.checkpoint == "bases":
            carry["bases"] = jnp.zeros((cfg.max_steps, k, n), dtype)
            carry["projections"] = _projection_buffers(cfg.max_steps, k, dtype)
        if cfg.trajectory_slots:
            slots, rank = cfg.trajectory_slots, cfg.trajectory_rank
            carry["trajectory"] = (
                jnp.zeros((slots, rank, n), dtype),
                jnp.zeros((slots, k, rank), dtype),
                jnp.zeros((slots,), bool),
                jnp.zeros((slots, n), dtype),
                *_projection_buffers(slots, k, dtype),
            )

    def advance_to(carry, t_target):
        def cond(c):
            return (c["t"] < t_target) & (c["j"] < cfg.max_steps) & ~c["failed"]

        def body(c):
            remaining = t_target - c["t"]
            tau_try = jnp.minimum(remaining, c["tau_suggest"]).astype(dtype)
            clipped = (remaining < c["tau_suggest"]) & (c["j"] > 0)
            stop = _stop_at_step(cfg, tau_try, tol_rate, clipped)
            basis, projection, skewness = _decompose_checked(cfg, apply, c["u"], stop)
            prop = _propagator(cfg, projection)
            tau, coef, err, tau_next, trials, ok = _largest_step(cfg, prop, tau_try, tol_rate)
            tau = tau.astype(ts.dtype)
            reached = tau >= remaining
            new = dict(c)
            new["u"] = prop.beta * (coef @ basis)
            new["t"] = jnp.where(reached, t_target, c["t"] + tau)
            # A step shortened only to land on an output time says nothing against
            # the controller's longer suggestion.
            clipped = reached & (trials == 0)
            new["tau_suggest"] = jnp.where(
                clipped, jnp.maximum(c["tau_suggest"], tau_next), tau_next
            ).astype(ts.dtype)
            new["j"] = c["j"] + 1
            new["rejected"] = c["rejected"] + trials
            new["matvecs"] = c["matvecs"] + projection.size
            new["err_sum"] = c["err_sum"] + err
            new["failed"] = ~ok
            new["skewness"] = jnp.maximum(c["skewness"], skewness)
            if record:
                new["us"], new["stride"] = _keep_state(cfg, c["us"], c["stride"], c["j"], c["u"])
                new["taus"] = c["taus"].at[c["j"]].set(tau)
                new["sizes"] = c["sizes"].at[c["j"]].set(projection.size)
                if cfg.checkpoint == "bases":
                    new["bases"] = c["bases"].at[c["j"]].set(basis)
                    new["projections"] = _Projection(
                        *(
                            buf.at[c["j"]].set(x)
                            for buf, x in zip(c["projections"], projection, strict=True)
                        )
                    )
                if cfg.trajectory_slots:
                    new["trajectory"] = _keep_trajectory(
                        cfg,
                        c["trajectory"],
                        c["j"],
                        c["u"],
                        (basis, projection, prop),
                        tau.astype(dtype),
                        tol * _TRAJECTORY_TOL,
                    )
            return new

        # The per-step records are written once per step at index j: as equinox
        # buffers they stay in-place scatters under vmap, where a plain
        # while_loop with a batched predicate would select between old and new
        # copies of every buffer on every step.
        carry = eqxi.while_loop(cond, body, carry, kind="lax", buffers=_step_records)
        return carry, (carry["u"], carry["j"])

    carry, (ys, out_step) = lax.scan(advance_to, carry, ts)
    exhausted = carry["t"] < t_final
    v_norm = jnp.linalg.norm(v)
    stats = ExpmStats(
        num_steps=carry["j"],
        num_rejected=carry["rejected"],
        num_matvecs=carry["matvecs"],
        error_estimate=carry["err_sum"] / jnp.where(v_norm > 0, v_norm, 1.0),
    )
    ys = eqx.error_if(
        ys,
        exhausted & ~carry["failed"],
        f"expm_multiply: max_steps={cfg.max_steps} reached before the final time; "
        "increase max_steps or krylov_dim, or loosen tol",
    )
    if cfg.skew:
        ys = eqx.error_if(
            ys,
            carry["skewness"] > skewness_tolerance(dtype),
            "expm_multiply: method='skew-lanczos' needs a skew-symmetric operator "
            "(A^T = -A), but x^T A x != 0 for a Krylov vector x; use method='arnoldi'",
        )
    ys = eqx.error_if(
        ys,
        carry["failed"],
        "expm_multiply: no step size met the tolerance (the operator or the state is "
        "not finite, or tol is below what this precision can reach)",
    )
    recorded = None
    if record:
        if cfg.checkpoint == "bases":
            policy_buffers = (carry["bases"], carry["projections"])
        else:
            policy_buffers = carry.get("trajectory")
        recorded = _ForwardRecord(
            states=carry["us"],
            step_sizes=carry["taus"],
            krylov_sizes=carry["sizes"],
            num_steps=carry["j"],
            output_steps=out_step,
            policy_buffers=policy_buffers,
            stride=carry["stride"],
        )
    return ys, stats, recorded


def _step_records(carry):
    """The forward carry's per-step buffers (see ``advance_to`` in :func:`_forward`)."""
    names = ("taus", "sizes", "bases", "projections", "trajectory")
    return [leaf for name in names if name in carry for leaf in jax.tree.leaves(carry[name])]


def _projection_buffers(count, k, dtype):
    """A :class:`_Projection` of zero buffers for ``count`` decompositions."""
    return _Projection(
        jnp.zeros((count, k, k), dtype),
        jnp.zeros((count,), dtype),
        jnp.zeros((count,), dtype),
        jnp.zeros((count,), jnp.int32),
    )


def _apply(matvec, params, x):
    return matvec(x, params)


def _keep_state(cfg: _Config, us, stride, j, u):
    """Store the state ``u`` at the start of step ``j`` in the checkpoint buffer.

    The buffer holds ``cfg.checkpoints`` states, those of steps ``0, stride,
    2 stride, ...``.  When it is full, every second one is dropped and the stride
    doubles (so memory does not grow with ``max_steps``); the backward sweep
    replays the dropped steps from the kept ones (:func:`_reverse_states`).
    """
    if cfg.replay_length == 1:  # room for every step: no thinning (and no copy of the buffer)
        return us.at[j].set(u), stride
    full = j == cfg.checkpoints * stride

    def thin(us, stride):
        half = us[0::2]
        rest = jnp.zeros_like(us[: us.shape[0] - half.shape[0]])
        return jnp.concatenate([half, rest]), 2 * stride

    us, stride = lax.cond(full, thin, lambda us, stride: (us, stride), us, stride)
    slot = jnp.minimum(j // stride, cfg.checkpoints - 1)
    keep = j % stride == 0
    return us.at[slot].set(jnp.where(keep, u, us[slot])), stride


def _keep_trajectory(cfg: _Config, buffers, j, u, decomposition, tau, fit_tol):
    """Store step ``j``'s trajectory basis, start state and small matrix (if ``j`` has a slot).

    The basis is ``Q^T V`` with ``Q`` the leading coefficients of
    :func:`~._small.trajectory_basis`: ``trajectory_rank`` vectors of length
    ``n`` in place of the ``krylov_dim`` of ``V``, enough for the backward
    sweep whenever its quadrature matrices lie in their span (checked there).
    A step whose trajectory samples are visibly not of that rank (first
    dropped singular value above ``10 fit_tol``: oscillatory or rough states)
    is marked invalid and not projected; the backward sweep rebuilds its basis.
    """
    basis, projection, prop = decomposition
    rank, n, k = cfg.trajectory_rank, u.shape[0], cfg.krylov_dim
    dtype = u.dtype

    def capture(_):
        q, miss = trajectory_basis(prop, tau, rank)
        valid = miss <= 10 * fit_tol
        rows = lax.cond(valid, lambda: q.T @ basis, lambda: jnp.zeros((rank, n), dtype))
        return rows, q, valid

    def skip(_):
        return jnp.zeros((rank, n), dtype), jnp.zeros((k, rank), dtype), jnp.zeros((), bool)

    rows, q, valid = lax.cond(j < cfg.trajectory_slots, capture, skip, None)
    values = (rows, q, valid, u, *projection)
    return tuple(buf.at[j].set(x, mode="drop") for buf, x in zip(buffers, values, strict=True))


def _advance(cfg: _Config, apply, u, tau, size):
    """One forward step of known length ``tau`` and Krylov size (as the forward sweep took it)."""
    basis, projection = _decompose(cfg, apply, u, _stop_at_size(size))
    prop = _propagator(cfg, projection)
    coef, _ = prop.coefficients(tau)
    return prop.beta * (coef @ basis)


def _reverse_states(cfg: _Config, apply, recorded: _ForwardRecord):
    """``(init, state_at)``: the forward state at the start of step ``j``, for ``j`` descending.

    ``state_at(j, replay) -> (u_j, replay)``.  Kept states are read from the
    buffer; a dropped one is recomputed from the kept state that starts its
    stretch: on entering a stretch of ``stride`` steps (at its last step) all
    its states are replayed into a buffer of ``cfg.replay_length`` states, at
    most ``stride - 1`` extra steps per ``stride`` steps.
    """
    us, stride = recorded.states, recorded.stride
    if cfg.replay_length == 1:
        return None, lambda j, replay: (us[j], replay)
    taus, sizes = recorded.step_sizes, recorded.krylov_sizes
    init = (jnp.zeros((cfg.replay_length, us.shape[1]), us.dtype), -jnp.ones((), jnp.int32))

    def state_at(j, replay):
        replayed, replayed_start = replay
        start = (j // stride) * stride

        def fill(replayed):
            replayed = replayed.at[0].set(us[start // stride])

            def body(i, replayed):
                return replayed.at[i].set(
                    _advance(
                        cfg,
                        apply,
                        replayed[i - 1],
                        taus[start + i - 1].astype(us.dtype),
                        sizes[start + i - 1],
                    )
                )

            return lax.fori_loop(1, j - start + 1, body, replayed)

        replayed = lax.cond(start != replayed_start, fill, lambda r: r, replayed)
        return replayed[j - start], (replayed, start)

    return init, state_at


def _output_cotangent(out_step, g, position):
    """Sum of the output cotangents that belong to the state after ``position`` steps."""
    mask = (out_step == position).astype(g.dtype)
    return mask @ g


def _backward_two_sided(cfg: _Config, matvec, params, recorded: _ForwardRecord, g, tol):
    taus, sizes = recorded.step_sizes, recorded.krylov_sizes
    out_step, policy_buffers = recorded.output_steps, recorded.policy_buffers
    dtype = g.dtype
    apply = functools.partial(_apply, matvec, params)
    replay0, state_at = _reverse_states(cfg, apply, recorded)
    if cfg.symmetric:
        apply_t = apply
    elif cfg.method == "affine-lanczos":
        # A_aug^T = [[A, 0], [b^T, 0]]: the last entry of the adjoint state
        # (the adjoint of the constant) feeds nothing else and no parameter
        # gradient, so it is kept at zero and A_aug^T acts as A.
        transposed = transpose_matvec(matvec, params, g[0])
        apply_t = lambda y: transposed(y).at[-1].set(0.0)  # noqa: E731
    elif cfg.skew:
        apply_t = lambda x: -apply(x)  # noqa: E731  (A^T = -A: no transpose needed)
    else:
        apply_t = transpose_matvec(matvec, params, g[0])
    t_final = jnp.sum(taus)
    tol_rate = (tol / jnp.where(t_final > 0, t_final, 1.0)).astype(dtype)
    rank_tol = (tol * _RANK_TOL).astype(dtype)
    fit_tol = (tol * _TRAJECTORY_TOL).astype(dtype)

    def rebuilt(j, u_j):
        """Forward basis of step ``j`` recomputed from its start state."""
        return _decompose(cfg, apply, u_j, _stop_at_size(sizes[j]))

    def from_states(j, replay, side_state):
        """Forward side of step ``j`` from the state checkpoints (rebuild its basis)."""
        if cfg.checkpoint == "bases":
            bases, projections = policy_buffers
            basis_f = bases[j]
            projection_f = _Projection(*(buf[j] for buf in projections))
        else:
            u_j, replay = state_at(j, replay)
            basis_f, projection_f = rebuilt(j, u_j)

        if cfg.skew:
            # For oscillatory (skew) operators the quadrature matrix has nearly
            # full rank (the trajectory rotates through the whole Krylov space:
            # measured on the 64^2 wave, every sub-step above k/2), so no
            # low-rank pairs: the sub-steps accumulate sum M V_b, a (k, n) block
            # over the step's forward basis, and the step ends with one batch of
            # k VJPs, however many sub-steps the adjoint took.  Chosen per
            # method, not per sub-step: under vmap a data-dependent choice
            # would run both.
            def cotangent(m, basis_b, rows):
                return None, rows + m @ basis_b

            def finish(rows):
                return params_cotangent(matvec, params, basis_f, rows)

            return (
                _propagator(cfg, projection_f),
                cotangent,
                finish,
                replay,
                jnp.zeros_like(basis_f),
            )

        def cotangent(m, basis_b, side_state):
            grad = _low_rank_cotangent(matvec, params, m, basis_f, basis_b, rank_tol)
            return grad, side_state

        return _propagator(cfg, projection_f), cotangent, None, replay, side_state

    def from_trajectory(j, replay, rebuilt_basis):
        """Forward side of step ``j`` from its stored trajectory basis ``U = Q^T V``.

        A sub-step's quadrature matrix ``M`` (over ``V``) is used as ``Q (Q^T M)``
        over ``U`` when that drops at most ``tol * _TRAJECTORY_TOL`` of it
        (Frobenius norms, relative); otherwise with the step's basis ``V``,
        rebuilt from its state at most once per step (at the start for a step
        the forward sweep marked invalid).  Measured on stiff heat (64^2, 128^2,
        tol 1e-4 .. 1e-10): 4 to 8 vectors suffice except on the first step from
        a rough start vector; on the 32^2 wave example (oscillatory) never.

        ``rebuilt_basis = (basis, have)`` carries the rebuilt basis (and whether
        it is there) across sub-steps.
        The rebuild is a loop of at most one pass rather than a cond: under vmap
        a cond with a batched predicate runs both branches for every element,
        the loop only while some element needs it.
        """
        rows, q, valid, u_j, *projection_f = (buf[j] for buf in policy_buffers)
        floor = 10 * jnp.finfo(dtype).eps * np.sqrt(cfg.krylov_dim)

        def ensure_basis(rebuilt_basis, need):
            def rebuild(state):
                del state
                return jnp.zeros((), bool), rebuilt(j, u_j)[0], jnp.ones((), bool)

            basis, have = rebuilt_basis
            _, basis, have = lax.while_loop(
                lambda state: state[0], rebuild, (need & ~have, basis, have)
            )
            return basis, have

        rebuilt_basis = ensure_basis((rebuilt_basis[0], jnp.zeros((), bool)), ~valid)

        def cotangent(m, basis_b, rebuilt_basis):
            projected = q @ (q.T @ m)
            dropped = jnp.linalg.norm(m - projected)
            fits = valid & (dropped <= jnp.maximum(fit_tol, floor) * jnp.linalg.norm(m))
            # One SVD; its left vectors lie in span(Q) when it fits (coefficients
            # Q^T u over U), else over the rebuilt V.  The part that does not
            # apply has no pairs (no VJP).
            left, right, keep = _singular_pairs(jnp.where(fits, projected, m), rank_tol)
            grad = params_cotangent_low_rank(
                matvec, params, left @ q, rows, right, basis_b, jnp.where(fits, keep, 0)
            )
            rebuilt_basis = ensure_basis(rebuilt_basis, ~fits)
            full = params_cotangent_low_rank(
                matvec, params, left, rebuilt_basis[0], right, basis_b, jnp.where(fits, 0, keep)
            )
            return _add(grad, full), rebuilt_basis

        projection_f = _Projection(*projection_f)
        return _propagator(cfg, projection_f), cotangent, None, replay, rebuilt_basis

    def sweep(carry: _BackwardCarry, lower, forward_side, side_state):
        """Steps ``carry.j - 1`` down to ``lower``, their forward sides from ``forward_side``.

        ``forward_side(j, replay, side_state) -> (propagator, cotangent, finish,
        replay, step_state)``: ``cotangent(m, basis_b, step_state) -> (gradient
        or None, step_state)`` per sub-step; ``finish(step_state)`` (if not None)
        gives the step's gradient after its last sub-step, else ``step_state``
        is the side state carried on to the next step.
        """

        def step(state):
            carry, side_state = state
            j = carry.j - 1
            tau = taus[j].astype(dtype)
            prop_f, cotangent, finish, replay, step_state = forward_side(
                j, carry.replay, side_state
            )

            def sub_body(c: _SubStep):
                sigma_try = jnp.minimum(c.s_end, c.sigma_suggest)
                # Cut short by the forward step's start; not on the first sub-step,
                # which has no step-size history (see _stop_at_step).
                clipped = (c.s_end < c.sigma_suggest) & jnp.isfinite(c.sigma_suggest)
                stop = _stop_at_step(cfg.adjoint, sigma_try, tol_rate, clipped)
                basis_b, projection_b = _decompose(cfg.adjoint, apply_t, c.lam, stop)
                prop_b = _propagator(cfg.adjoint, projection_b)
                sigma, _, _, sigma_next, trials, ok = _largest_step(
                    cfg.adjoint, prop_b, sigma_try, tol_rate
                )
                reached = sigma >= c.s_end
                s_start = jnp.where(reached, 0.0, c.s_end - sigma)
                sigma = c.s_end - s_start
                c_start = prop_f.beta * prop_f.exp_times(s_start)
                m, lam_coef = two_sided_block(prop_f, prop_b, c_start, sigma)
                delta, step_state = cotangent(m, basis_b, c.step_state)
                grad = c.grad if delta is None else _add(c.grad, delta)
                clipped = reached & (trials == 0)
                sigma_suggest = jnp.where(
                    clipped, jnp.maximum(c.sigma_suggest, sigma_next), sigma_next
                )
                return _SubStep(
                    s_start,
                    prop_b.beta * (lam_coef @ basis_b),
                    grad,
                    sigma_suggest,
                    c.failed | ~ok,
                    step_state,
                )

            sub = lax.while_loop(
                lambda c: (c.s_end > 0) & ~c.failed,
                sub_body,
                _SubStep(tau, carry.lam, carry.grad, carry.sigma_suggest, carry.failed, step_state),
            )
            grad = sub.grad
            if finish is None:
                side_state = sub.step_state
            else:
                grad = _add(grad, finish(sub.step_state))
            lam = sub.lam + _output_cotangent(out_step, g, j)
            carry = _BackwardCarry(j, lam, grad, sub.sigma_suggest, sub.failed, replay)
            return carry, side_state

        carry, _ = lax.while_loop(lambda state: state[0].j > lower, step, (carry, side_state))
        return carry

    lam0 = _output_cotangent(out_step, g, recorded.num_steps)
    grad0 = jax.tree_util.tree_map(jnp.zeros_like, params)
    carry = _BackwardCarry(
        recorded.num_steps, lam0, grad0, jnp.asarray(jnp.inf, dtype), jnp.zeros((), bool), replay0
    )
    if cfg.trajectory_slots:
        # Steps past the stored trajectories first (descending), then those stored.
        carry = sweep(carry, cfg.trajectory_slots, from_states, ())
        basis = jnp.zeros((cfg.krylov_dim, g.shape[-1]), dtype)
        carry = sweep(carry, 0, from_trajectory, (basis, jnp.zeros((), bool)))
    else:
        carry = sweep(carry, 0, from_states, ())
    lam = eqx.error_if(
        carry.lam,
        carry.failed,
        "expm_multiply: the backward (adjoint) sweep found no step size meeting the tolerance",
    )
    return lam, carry.grad


def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _low_rank_cotangent(matvec, params, m, basis_f, basis_b, rank_tol):
    """``sum_pq M_pq d<V_b e_q, A V_f e_p>/dparams`` with ``M`` truncated to its numerical rank.

    With ``M = U S W^T`` the sum is ``sum_r S_r d<V_b W_r, A V_f U_r>/dparams``.
    The quadrature matrix of a step is an integral of the rank-one
    ``exp(s H_f) c e1^T exp((sigma - s) H_b^T)``; its singular values fall
    exponentially (measured on stiff heat, k = 30: 3 to 5 above 1e-14 S_0), so
    instead of ``k`` VJPs of ``matvec`` only those with ``S_r > rank_tol * S_0``
    are taken.  The dropped terms change the gradient by at most
    ``k * rank_tol`` relative to the step's largest one (in the norms of the
    basis vectors and of ``dA``).
    """
    left, right, keep = _singular_pairs(m, rank_tol)
    return params_cotangent_low_rank(matvec, params, left, basis_f, right, basis_b, keep)


def _singular_pairs(m, rank_tol):
    """``(U^T, S W^T, count)`` of ``M = U S W^T``, ``count`` pairs above ``rank_tol * S_0``."""
    u, svals, wt = _svd(m)
    keep = jnp.sum(svals > rank_tol * svals[0])
    return u.T, svals[:, None] * wt, keep


def _backward_discrete(cfg: _Config, matvec, params, recorded: _ForwardRecord, g):
    from ._discrete import discrete_step

    taus, out_step = recorded.step_sizes, recorded.output_steps
    apply = functools.partial(_apply, matvec, params)
    replay0, state_at = _reverse_states(cfg, apply, recorded)
    lam0 = _output_cotangent(out_step, g, recorded.num_steps)
    grad0 = jax.tree_util.tree_map(jnp.zeros_like, params)

    def step(carry):
        j, lam, grad, replay = carry
        j = j - 1
        u_j, replay = state_at(j, replay)
        _, vjp = jax.vjp(
            lambda u, p: discrete_step(cfg, matvec, u, p, taus[j].astype(u.dtype)), u_j, params
        )
        lam, step_grad = vjp(lam)
        grad = jax.tree_util.tree_map(jnp.add, grad, step_grad)
        lam = lam + _output_cotangent(out_step, g, j)
        return j, lam, grad, replay

    init = (recorded.num_steps, lam0, grad0, replay0)
    _, lam, grad, _ = lax.while_loop(lambda c: c[0] > 0, step, init)
    return lam, grad


def _stats_as_floats(stats, dtype):
    # Floats so that differentiation needs no float0 tangents for them.
    return ExpmStats(*(jnp.asarray(s, dtype) for s in stats))


# The differentiation rules need the sweeps above (imported from here).
from ._rules import expm_core as _expm_core  # noqa: E402


def _check_concrete(name, value, check, message):
    """Run a value check when ``value`` is concrete; under tracing defer to runtime."""
    try:
        concrete = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    if not check(concrete):
        raise ValueError(f"{name}: {message}")
    return True


def _check_skew(matvec, v, params):
    """ValueError if ``x^T A x != 0`` for ``x = v`` or a random ``x`` (concrete inputs only).

    Under tracing the forward sweep checks every Krylov vector instead and
    raises at run time (see :func:`~pdeinv.krylov._skew.skewness_tolerance`).
    """
    leaves = jax.tree_util.tree_leaves((v, params))
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return
    probe = np.random.default_rng(0).standard_normal(v.shape[0]).astype(v.dtype)
    for x in (v, jnp.asarray(probe)):
        ax = matvec(x, params)
        scale = float(jnp.linalg.norm(x) * jnp.linalg.norm(ax))
        if scale > 0 and abs(float(jnp.dot(x, ax))) > skewness_tolerance(v.dtype) * scale:
            raise ValueError(
                "method='skew-lanczos' needs a skew-symmetric operator (A^T = -A), but "
                f"x^T A x = {float(jnp.dot(x, ax)):.3g} for a vector x with ||x|| ||A x|| = "
                f"{scale:.3g}; use method='arnoldi' (or 'lanczos' for a symmetric A)"
            )


def _check_augmented(matvec, v, params):
    """ValueError unless ``A x`` has a zero last entry (concrete inputs only).

    ``"affine-lanczos"`` takes the augmented operator ``[[A, b], [0, 0]]`` of
    :func:`~pdeinv.expm.augment_affine`; its last row must vanish.  (That ``A``
    is symmetric is the caller's assertion, as for ``"lanczos"``.)
    """
    leaves = jax.tree_util.tree_leaves((v, params))
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return
    probe = np.random.default_rng(0).standard_normal(v.shape[0]).astype(v.dtype)
    out = matvec(jnp.asarray(probe), params)
    if float(jnp.abs(out[-1])) > 0:
        raise ValueError(
            "method='affine-lanczos' needs the augmented operator [[A, b], [0, 0]] of "
            "augment_affine (a zero last row), but A x has last entry "
            f"{float(out[-1]):.3g}; use method='arnoldi'"
        )


def _prepare(
    matvec,
    v,
    params,
    t,
    *,
    tol,
    method,
    krylov_dim,
    gradient,
    max_steps,
    reorthogonalize,
    checkpoint,
    checkpoints,
):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if (
        isinstance(krylov_dim, bool)
        or not isinstance(krylov_dim, (int, np.integer))
        or krylov_dim < 1
    ):
        raise ValueError(f"krylov_dim must be an integer >= 1, got {krylov_dim!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if checkpoints is None:
        checkpoints = DEFAULT_CHECKPOINTS
    elif (
        isinstance(checkpoints, bool)
        or not isinstance(checkpoints, (int, np.integer))
        or checkpoints < 1
    ):
        raise ValueError(f"checkpoints must be None or an integer >= 1, got {checkpoints!r}")
    # The bases policy indexes its buffers by step: it keeps every state.
    kept = int(max_steps) if checkpoint == "bases" else min(int(checkpoints), int(max_steps))
    if kept < max_steps:
        kept += kept % 2  # thinning halves the buffer
    v = jnp.asarray(v)
    if v.ndim == 1 and not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    v = check_vector(v, _WHERE)
    n = v.shape[0]
    check_matvec(matvec, v, params, _WHERE)
    scalar_t = jnp.ndim(t) == 0
    ts = jnp.atleast_1d(jnp.asarray(t))
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"t must be a scalar or a non-empty 1-D array, got shape {jnp.shape(t)}")
    ts = ts.astype(v.dtype)
    checked_t = _check_concrete("t", ts, lambda a: np.all(np.isfinite(a)), "times must be finite")
    if checked_t:
        _check_concrete("t", ts, lambda a: np.all(a >= 0), "times must be >= 0")
        _check_concrete("t", ts, lambda a: np.all(np.diff(a) >= 0), "times must be non-decreasing")
    else:
        bad_t = ~jnp.all(jnp.isfinite(ts)) | jnp.any(ts < 0) | jnp.any(jnp.diff(ts) < 0)
        ts = eqx.error_if(ts, bad_t, "expm_multiply: t must be finite, >= 0 and non-decreasing")
    v = check_finite(v, _WHERE)
    params = check_finite_params(params, _WHERE)
    if method == "skew-lanczos":
        _check_skew(matvec, v, params)
    if reorthogonalize is None:
        reorthogonalize = method == "arnoldi"
    if method in ("skew-lanczos", "affine-lanczos") and reorthogonalize:
        raise ValueError(f"reorthogonalize=True is not available for method={method!r}")
    if method in ("skew-lanczos", "affine-lanczos") and gradient == "discrete":
        raise ValueError(
            f"gradient='discrete' supports method='arnoldi' and 'lanczos', not {method!r}"
        )
    if method == "affine-lanczos":
        _check_augmented(matvec, v, params)
    k = int(min(krylov_dim, n))
    _warn_blas_threads(k)
    slots = rank = 0
    # Oscillatory (skew) trajectories are never of low rank: no trajectory bases.
    # The bordered affine projection has no eigenbasis shortcut for the samples
    # (their Padé squarings cost more than the rebuilt bases save: measured on
    # 64^2 heat with boundary data, value+gradient 2x the homogeneous solve with
    # state checkpoints, 3.5x with trajectory bases).
    if (
        checkpoint == "trajectory"
        and gradient == "two-sided"
        and method not in ("skew-lanczos", "affine-lanczos")
    ):
        rank = min(_TRAJECTORY_RANK, k)
        if rank < k:  # else a projection would store as much as the basis itself
            per_step = (rank + 1) * n + k * (k + rank + 3)
            slots = min(kept, _TRAJECTORY_BYTES // (per_step * v.dtype.itemsize))
        rank = rank if slots else 0
    cfg = _Config(
        method=method,
        krylov_dim=k,
        max_steps=int(max_steps),
        gradient=gradient,
        reorthogonalize=bool(reorthogonalize),
        checkpoint=checkpoint,
        checkpoints=kept,
        trajectory_slots=slots,
        trajectory_rank=rank,
    )
    return cfg, v, ts, jnp.asarray(tol, v.dtype), scalar_t, params


def _warn_blas_threads(k: int) -> None:
    """Warn when ``k x k`` LAPACK kernels will run under oversubscribed BLAS threads."""
    if k < SLOW_KRYLOV_DIM or jax.default_backend() != "cpu" or blas_threads() == 1:
        return
    warnings.warn(
        f"expm_multiply: krylov_dim={k} on CPU with {blas_threads()} BLAS threads: the "
        "small eigendecompositions and SVDs of the projected matrices run about 100x slower "
        "while BLAS threads compete with XLA's; call pdeinv.limit_blas_threads() once (or "
        "set OPENBLAS_NUM_THREADS=1) -- see docs/integrator.md#blas-threads",
        RuntimeWarning,
        stacklevel=4,
    )


# Compiled once per (config, matvec): a matvec passed as the same function object
# reuses the compiled solver across calls, also outside a user's jit.
_expm_core_jit = jax.jit(_expm_core, static_argnums=(0, 1))


def _call(matvec, v, params, t, options):
    with _one_line_runtime_errors():
        cfg, v, ts, tol, scalar_t, params = _prepare(matvec, v, params, t, **options)
        # Values matvec closes over (possibly tracers being differentiated) become
        # explicit arguments, so that their gradients are not silently dropped.
        closed, consts = jax.closure_convert(matvec, v, params)
        if any(isinstance(c, jax.core.Tracer) for c in consts):
            closed = _ClosedMatvec(closed)
            ys, stats = _expm_core_jit(cfg, closed, v, (params, tuple(consts)), ts, tol)
        else:
            ys, stats = _expm_core_jit(cfg, matvec, v, params, ts, tol)
        if not isinstance(ys, jax.core.Tracer):  # not under a user's trace: finish here
            jax.block_until_ready((ys, stats))
    return (ys[0] if scalar_t else ys), stats


class ExpmRuntimeError(jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError):
    """A run-time check of :func:`expm_multiply` failed; the message is one line.

    Both a ``jax.errors.JaxRuntimeError`` and an ``equinox.EquinoxRuntimeError``
    (what such failures raised before), so existing ``except`` clauses still match.

    Raised instead of XLA's multi-line callback error when the failed check ran
    while ``expm_multiply`` itself was on the stack (concrete inputs, or
    ``jax.grad`` without ``jit``).  Under a caller's ``jax.jit`` the check fires
    when the caller's compiled program runs, outside ``expm_multiply``: jaxlib then
    raises its own ``JaxRuntimeError`` whose first line is its callback banner and
    whose line ``..._EquinoxRuntimeError: <message>`` holds the same message.
    """


class _DropCheckTracebacks(logging.Filter):
    """Hide jax's logged traceback of a failed equinox check (the error says it once)."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "_EquinoxRuntimeError"


@contextlib.contextmanager
def _one_line_runtime_errors():
    """Re-raise a failed ``eqx.error_if`` check as :class:`ExpmRuntimeError` (one line)."""
    logger = logging.getLogger("jax._src.callback")
    quiet = _DropCheckTracebacks()
    logger.addFilter(quiet)
    try:
        yield
    except (jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError) as err:
        # jaxlib's text has "..._EquinoxRuntimeError: <message>", equinox's own
        # (eager checks run through its filter_jit) "equinox.EquinoxRuntimeError: <message>".
        found = re.search(r"EquinoxRuntimeError: (.+)", str(err))
        if found is None or isinstance(err, ExpmRuntimeError):
            raise
        raise ExpmRuntimeError(found.group(1).strip()) from None
    finally:
        logger.removeFilter(quiet)


class _ClosedMatvec:
    """``matvec(v, (params, consts))`` for a closure-converted matvec (hashable by identity)."""

    def __init__(self, closed):
        self.closed = closed

    def __call__(self, v, params_and_consts):
        params, consts = params_and_consts
        return self.closed(v, params, *consts)


def expm_multiply(
    matvec,
    v,
    params,
    t=1.0,
    *,
    tol: float = 1e-8,
    method: str = "arnoldi",
    krylov_dim: int = 30,
    gradient: str = "two-sided",
    max_steps: int = 500,
    checkpoint: str = "trajectory",
    reorthogonalize: bool | None = None,
    checkpoints: int | None = None,
):
    r"""Action of the matrix exponential ``exp(t A(params)) v``, matrix-free.

    Adaptive Krylov time stepping (Expokit-style a posteriori error control)
    with derivative rules that are accurate to ``tol`` too: the two-sided
    continuous adjoint in reverse mode, a forward sensitivity solve in forward
    mode (see the module docstring and the Notes).

    Parameters
    ----------
    matvec
        ``matvec(v, params) -> A(params) @ v``; JAX-traceable and linear in ``v``.
    v
        Start vector, shape ``(n,)``.
    params
        Pytree of arrays; differentiated through.  Anything ``matvec`` closes
        over is differentiated as well.
    t
        Scalar time, or 1-D non-decreasing array of times ``>= 0``.
    tol
        Relative accuracy target of the value and of the reverse-mode gradient
        (with respect to ``v`` and every leaf of ``params``).
    method
        ``"arnoldi"`` (general ``A``), ``"lanczos"`` (``A`` symmetric: the
        caller asserts it; three-term recurrence, ``A^T = A`` in the adjoint) or
        ``"skew-lanczos"`` (``A^T = -A``, e.g. a conservative wave system in
        energy variables: two-term recurrence, ``exp(t A)`` orthogonal, ``-A`` in
        the adjoint).  ``"skew-lanczos"`` checks its assumption: concrete inputs
        are probed (``x^T A x`` for ``x = v`` and one random vector) and a
        ``ValueError`` is raised before any solve; under ``jit`` the forward
        sweep measures ``q^T A q`` on every Krylov vector and raises at run time
        when it exceeds ``sqrt(eps) max ||A q||``.  It supports neither
        ``reorthogonalize=True`` nor ``gradient="discrete"``.
        ``"affine-lanczos"``: ``matvec`` is the augmented operator
        ``[[A, b(params)], [0, 0]]`` of :func:`augment_affine` with ``A``
        symmetric and ``v = [u0; s]`` (``s = 1`` for ``u' = A u + b``); the
        forward basis is ``v`` followed by Lanczos vectors of ``A`` from
        ``A u0 + s b`` (a bordered tridiagonal projection, no orthogonalisation
        against the basis), the adjoint plain Lanczos.  Its reverse mode treats
        the last entry of ``v`` as a constant and ignores cotangents on the last
        entry of the result (both are the affine bookkeeping, not part of the
        state ``u``): their derivatives come out zero.  Concrete inputs whose
        operator has a nonzero last row raise a ``ValueError``.
    krylov_dim
        Krylov dimension per step (clipped to ``n``).
    gradient
        ``"two-sided"`` (default, continuous adjoint with its own error control)
        or ``"discrete"`` (exact derivative of the Krylov approximation, the
        adjoint of Krämer et al. 2024; can be far off for stiff ``A``).
    max_steps
        Static bound on the number of steps (shapes are static under ``jit``).
        Running out raises.  It costs no memory beyond ``max_steps`` scalars.
    checkpoint
        What the forward sweep keeps for the gradient.  ``"trajectory"``
        (default): the step-start states and, for the first steps (at most
        ``checkpoints``, and as many as fit in 8 MiB: none for ``n`` above
        about ``10^5`` in float64), an orthonormal basis of 8 vectors spanning
        the step's trajectory ``u(s)``.  The backward sweep uses it wherever a
        sub-step's quadrature matrix lies in its span to ``tol / 100`` (checked
        a posteriori) and rebuilds the step's Krylov basis from its state
        otherwise.  ``"states"``: step-start states only, every forward basis
        is rebuilt (on 2-D heat about 40 % more matvecs per value and
        gradient).  ``"bases"``: every state and every forward basis,
        ``max_steps * n * krylov_dim`` memory (for small problems).
    reorthogonalize
        Full reorthogonalisation of the Krylov basis.  Default: on for Arnoldi,
        off for Lanczos (three-term recurrence).
    checkpoints
        Number of step-start states the ``"trajectory"`` and ``"states"``
        policies keep (default 32, at most ``max_steps``; rounded up to even).
        While a solve takes no more steps, every state is kept.  Beyond that
        every second kept state is dropped whenever the buffer fills (the
        stride between kept states doubles), and the backward sweep recomputes
        the dropped ones from the kept state before them: at most one extra
        forward step per step.  The gradient's memory is ``(checkpoints + s) *
        n`` plus ``O(n * krylov_dim)`` (plus at most 8 MiB of trajectory bases),
        with ``s`` the largest stride (the smallest power of two with
        ``checkpoints * s >= max_steps``), independent of the steps taken.

    Returns
    -------
    Array
        ``exp(t A) v`` of shape ``(n,)`` for a scalar ``t``, else ``(len(t), n)``
        with row ``i`` equal to ``exp(t_i A) v``.

    Notes
    -----
    Differentiable in both modes with respect to ``v``, ``params`` and ``t``,
    under ``jit`` and ``vmap``: ``jax.grad``/``jax.vjp``/``jax.jacrev`` run the
    adjoint sweep, ``jax.jvp``/``jax.jacfwd``/``jax.linearize`` a forward
    sensitivity solve of the block operator ``[[A, dA], [0, A]]`` with its own
    error control (accurate to ``tol``; docs/design.md#forward-mode).
    ``jax.jvp`` of ``jax.grad`` works for ``"lanczos"`` (the derivative of the
    sweeps themselves, not error-controlled); other second derivatives and
    forward mode with ``gradient="discrete"`` raise ``NotImplementedError``.

    Raises
    ------
    ValueError, TypeError
        Bad arguments (named in the message), before any solve.
    jax.errors.JaxRuntimeError
        A solve that gives up (step budget, no step meeting ``tol``) or, under
        ``jit``, a traced input that is not finite (``v``, a leaf of ``params``,
        ``t``) or a decreasing ``t``.  Called outside a ``jit`` it is an
        :class:`ExpmRuntimeError` whose message is one line; under a caller's
        ``jit`` it is jaxlib's callback error, in which the line
        ``..._EquinoxRuntimeError: <message>`` carries the same message.

    See Also
    --------
    expm_multiply_info : same call, also returning :class:`ExpmStats`.
    """
    y, _ = expm_multiply_info(
        matvec,
        v,
        params,
        t,
        tol=tol,
        method=method,
        krylov_dim=krylov_dim,
        gradient=gradient,
        max_steps=max_steps,
        checkpoint=checkpoint,
        reorthogonalize=reorthogonalize,
        checkpoints=checkpoints,
    )
    return y


def expm_multiply_info(
    matvec,
    v,
    params,
    t=1.0,
    *,
    tol: float = 1e-8,
    method: str = "arnoldi",
    krylov_dim: int = 30,
    gradient: str = "two-sided",
    max_steps: int = 500,
    checkpoint: str = "trajectory",
    reorthogonalize: bool | None = None,
    checkpoints: int | None = None,
):
    """:func:`expm_multiply` that also returns solver statistics.

    Returns
    -------
    y : Array
        As :func:`expm_multiply`.
    stats : ExpmStats
        Steps, rejected step sizes, matvecs and error estimate of the forward sweep.
    """
    options = dict(
        tol=tol,
        method=method,
        krylov_dim=krylov_dim,
        gradient=gradient,
        max_steps=max_steps,
        checkpoint=checkpoint,
        reorthogonalize=reorthogonalize,
        checkpoints=checkpoints,
    )
    y, stats = _call(matvec, v, params, t, options)
    ints = ExpmStats(*(jnp.asarray(s).astype(jnp.int32) for s in stats[:3]), stats.error_estimate)
    return y, ints
