"""The forward sweep: adaptive steps to every output time, and what it records.

With ``record=True`` it keeps what the reverse sweeps (:mod:`._reverse`) and the
tangent (:mod:`._rules`) need: a :class:`_ForwardRecord` of step-start states
(thinned), step and Krylov sizes, and the buffers of the checkpoint policy
``cfg.checkpoint`` (:mod:`._checkpoint`, docs/design.md#checkpoint-policies).
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
from ._checkpoint import keep_state
from ._config import ExpmStats, _Config
from ._step import (
    _apply,
    _decompose_checked,
    _largest_step,
    _propagator,
    _stop_at_step,
    _weighted_scale,
)


class _ForwardRecord(NamedTuple):
    """What the forward sweep keeps for the reverse (and tangent) sweeps."""

    states: Any  # (checkpoints, n) step-start states, thinned (see _checkpoint.keep_state)
    step_sizes: Any  # (max_steps,) tau of every step
    krylov_sizes: Any  # (max_steps,) Krylov dimension every step built
    num_steps: Any  # steps taken
    output_steps: Any  # (len(t),) steps taken when each output time was reached
    # The checkpoint policy's own buffers (cfg.checkpoint.init_buffers / record).
    policy_buffers: Any
    stride: Any  # steps between kept states


def _forward(cfg: _Config, matvec, v, params, ts, tol, record: bool):
    """Adaptive forward sweep.  Returns ``(ys, stats, record)``.

    Under ``vmap`` the batch runs as ``cfg.batching`` says (:mod:`._batching`);
    one after another, each solve records with the checkpoint policy's share of
    the batch (:meth:`~._checkpoint.AbstractCheckpoint.for_batch`).
    """

    def sweep_for(cfg):
        def sweep(v, params, ts, tol):
            return _forward_sweep(cfg, matvec, v, params, ts, tol, record)

        return sweep

    def for_batch(size):
        return sweep_for(cfg.for_batch(size))

    batched = per_element(sweep_for(cfg), cfg.batching, for_batch=for_batch if record else None)
    return batched(v, params, ts, tol)


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
    if record:
        carry["us"] = jnp.zeros((cfg.checkpoints, n), dtype)
        carry["stride"] = jnp.ones((), jnp.int32)
        carry["taus"] = jnp.zeros((cfg.max_steps,), ts.dtype)
        carry["sizes"] = jnp.zeros((cfg.max_steps,), jnp.int32)
        carry["policy"] = cfg.checkpoint.init_buffers(cfg, n, dtype)

    def advance_to(carry, t_target):
        def cond(c):
            return (c["t"] < t_target) & (c["j"] < cfg.max_steps) & ~c["failed"]

        def body(c):
            remaining = t_target - c["t"]
            tau_try = jnp.minimum(remaining, c["tau_suggest"]).astype(dtype)
            clipped = (remaining < c["tau_suggest"]) & (c["j"] > 0)
            stop = _stop_at_step(cfg, tau_try, tol_rate, clipped)
            basis, projection, skewness, residual = _decompose_checked(cfg, apply, c["u"], stop)
            prop = _propagator(cfg, projection)
            scale = _weighted_scale(cfg, c["u"], residual, prop.beta)
            tau, coef, err, tau_next, trials, ok = _largest_step(
                cfg, prop, tau_try, tol_rate, scale
            )
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
                new["us"], new["stride"] = keep_state(cfg, c["us"], c["stride"], c["j"], c["u"])
                new["taus"] = c["taus"].at[c["j"]].set(tau)
                new["sizes"] = c["sizes"].at[c["j"]].set(projection.size)
                new["policy"] = cfg.checkpoint.record(
                    cfg,
                    c["policy"],
                    c["j"],
                    c["u"],
                    (basis, projection, prop),
                    tau.astype(dtype),
                    tol,
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
    checks = [
        (
            exhausted & ~carry["failed"],
            f"expm_multiply: max_steps={cfg.max_steps} reached before the final time; "
            "increase max_steps or krylov_dim, or loosen tol",
        )
    ]
    if cfg.symmetric or cfg.bordered:
        checks.append(
            (
                _asymmetry(cfg, apply, v) > skewness_tolerance(dtype),
                f"expm_multiply: method={cfg.method!r} needs a symmetric operator A (for "
                "'affine-lanczos' the A of [[A, b], [0, 0]]), but v^T A^2 v != ||A v||^2; "
                "use method='arnoldi'",
            )
        )
    if cfg.skew:
        checks.append(
            (
                carry["skewness"] > skewness_tolerance(dtype),
                "expm_multiply: method='skew-lanczos' needs a skew-symmetric operator "
                "(A^T = -A), but x^T A x != 0 for a Krylov vector x; use method='arnoldi'",
            )
        )
    checks.append(
        (
            carry["failed"],
            "expm_multiply: no step size met the tolerance (the operator or the state is "
            "not finite, or tol is below what this precision can reach)",
        )
    )
    # The checks guard the step count too, which every reverse sweep reads: under
    # jit(grad) the values ys are often unused, and a check on them alone would be
    # compiled away with them.
    guarded = (ys, carry["j"])
    for failed, message in checks:
        guarded = eqx.error_if(guarded, failed, message)
    ys, num_steps = guarded
    recorded = None
    if record:
        recorded = _ForwardRecord(
            states=carry["us"],
            step_sizes=carry["taus"],
            krylov_sizes=carry["sizes"],
            num_steps=num_steps,
            output_steps=out_step,
            policy_buffers=carry["policy"],
            stride=carry["stride"],
        )
    return ys, stats, recorded


def _asymmetry(cfg: _Config, apply, v):
    """``|x^T A^2 x - ||A x||^2| / (||x|| ||A^2 x||)`` for the start vector ``x``: zero
    (to rounding) for a symmetric ``A``, of order one for most others.

    Lanczos trusts the operator's symmetry: on a nonsymmetric one its recurrence
    gives a wrong value, and its adjoint (which applies ``A`` for ``A^T``) a wrong
    gradient, with no error estimate noticing.  Two matvecs per solve (about 1 %)
    make that an error.  For the bordered process ``x`` is ``v`` with its last
    entry (the affine constant) zeroed, on which the augmented operator acts as ``A``.
    """
    x = v.at[-1].set(0.0) if cfg.bordered else v
    ax = apply(x)
    aax = apply(ax)
    if cfg.bordered:
        ax, aax = ax.at[-1].set(0.0), aax.at[-1].set(0.0)
    scale = jnp.linalg.norm(x) * jnp.linalg.norm(aax)
    gap = jnp.abs(jnp.dot(x, aax) - jnp.dot(ax, ax))
    return jnp.where(scale > 0, gap / jnp.where(scale > 0, scale, 1.0), 0.0)


def _step_records(carry):
    """The forward carry's per-step buffers (see ``advance_to`` in :func:`_forward`)."""
    names = ("taus", "sizes", "policy")
    return [leaf for name in names if name in carry for leaf in jax.tree.leaves(carry[name])]


def _stats_as_floats(stats, dtype):
    # Floats so that differentiation needs no float0 tangents for them.
    return ExpmStats(*(jnp.asarray(s, dtype) for s in stats))
