"""The forward sweep: adaptive steps to every output time, and what it records.

With ``record=True`` it keeps what the reverse sweeps (:mod:`._reverse`) and the
tangent (:mod:`._rules`) need: a :class:`_ForwardRecord` of step-start states
(thinned), step and Krylov sizes, and the checkpoint policy's buffers
(docs/design.md#checkpoint-policies).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax import lax

from ..krylov._batching import per_element
from ..krylov._skew import skewness_tolerance
from ._config import _TRAJECTORY_TOL, ExpmStats, _Config
from ._small import trajectory_basis
from ._step import (
    _apply,
    _decompose_checked,
    _largest_step,
    _Projection,
    _propagator,
    _stop_at_step,
)


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


def _forward(cfg: _Config, matvec, v, params, ts, tol, record: bool):
    """Adaptive forward sweep.  Returns ``(ys, stats, record)``.

    Under ``vmap`` the batch runs as ``cfg.batching`` says (:mod:`._batching`).
    """

    def sweep(v, params, ts, tol):
        return _forward_sweep(cfg, matvec, v, params, ts, tol, record)

    return per_element(sweep, cfg.batching)(v, params, ts, tol)


def _forward_sweep(cfg: _Config, matvec, v, params, ts, tol, record: bool):
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


def _stats_as_floats(stats, dtype):
    # Floats so that differentiation needs no float0 tangents for them.
    return ExpmStats(*(jnp.asarray(s, dtype) for s in stats))
