"""The reverse sweeps: the two-sided adjoint (default) and the discrete one.

Both walk the forward steps backwards from a :class:`~._forward._ForwardRecord`;
dropped step-start states are replayed (:func:`~._checkpoint.reverse_states`).
What the checkpoint policy kept gives each step's forward side
(:mod:`._checkpoint`).  The mathematics: docs/design.md#the-two-sided-adjoint.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ..krylov._common import transpose_matvec
from ..krylov._skew import skewness_tolerance
from ._checkpoint import AdjointContext, reverse_states
from ._config import _RANK_TOL, _Config
from ._cotangent import _add
from ._forward import _ForwardRecord
from ._small import two_sided_block
from ._step import _apply, _decompose_checked, _largest_step, _propagator, _stop_at_step


class _BackwardCarry(NamedTuple):
    """State of the two-sided backward sweep between forward steps."""

    j: Any  # steps not yet swept (the sweep is at the start of step j)
    lam: Any  # adjoint state at that time
    grad: Any  # parameter gradient accumulated so far (pytree like params)
    sigma_suggest: Any  # step size the adjoint's controller suggests next
    failed: Any  # no sub-step met the tolerance
    skewness: Any  # largest skewness the adjoint's skew processes measured (0 for others)
    replay: Any  # replayed states (see _checkpoint.reverse_states)


class _SubStep(NamedTuple):
    """State of the adjoint's sub-steps inside one forward step."""

    s_end: Any  # the sub-step ends here (time from the forward step's start)
    lam: Any
    grad: Any
    sigma_suggest: Any
    failed: Any
    skewness: Any
    step_state: Any  # the forward side's own state (see _checkpoint.ForwardSide)


def _output_cotangent(out_step, g, position):
    """Sum of the output cotangents that belong to the state after ``position`` steps."""
    mask = (out_step == position).astype(g.dtype)
    return mask @ g


def _backward_two_sided(
    cfg: _Config, matvec, params, recorded: _ForwardRecord, g, tol, *, exact_tangents=False
):
    """``(v_bar, params_bar)``: the two-sided adjoint sweep for the output cotangents ``g``.

    The steps are swept in the passes of the checkpoint policy
    (:meth:`~._checkpoint.AbstractCheckpoint.backward_passes`), which gives
    each step's forward side; the adjoint's own sub-steps are
    :func:`_sub_step`.  ``exact_tangents`` (static) when the sweep is itself
    differentiated in forward mode (``jax.jvp`` of ``jax.grad``): the
    trajectory checkpoints then rebuild every step's basis, because the stored
    trajectory basis spans the quadrature matrix but not its tangent (see
    :func:`~._cotangent._low_rank_cotangent_jvp`).
    """
    dtype = g.dtype
    apply = functools.partial(_apply, matvec, params)
    replay0, state_at = reverse_states(cfg, apply, recorded)
    t_final = jnp.sum(recorded.step_sizes)
    tol_rate = (tol / jnp.where(t_final > 0, t_final, 1.0)).astype(dtype)
    side = AdjointContext(
        cfg=cfg,
        matvec=matvec,
        params=params,
        apply=apply,
        state_at=state_at,
        krylov_sizes=recorded.krylov_sizes,
        rank_tol=(tol * _RANK_TOL).astype(dtype),
        tol=tol,
        exact_tangents=exact_tangents,
    )
    sub_step = functools.partial(
        _sub_step,
        cfg.adjoint,
        _transposed(cfg, matvec, params, apply, g[0]),
        tol_rate,
        cfg.krylov_dim,
    )
    carry = _BackwardCarry(
        recorded.num_steps,
        _output_cotangent(recorded.output_steps, g, recorded.num_steps),
        jax.tree_util.tree_map(jnp.zeros_like, params),
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), bool),
        jnp.zeros((), dtype),
        replay0,
    )
    for lower, forward_side, side_state in cfg.checkpoint.backward_passes(side, recorded):
        carry = _sweep(sub_step, recorded, g, carry, lower, forward_side, side_state)
    lam = eqx.error_if(
        carry.lam,
        carry.failed,
        "expm_multiply: the backward (adjoint) sweep found no step size meeting the tolerance",
    )
    if cfg.skew:
        # The forward sweep checked skewness on the Krylov vectors of the state
        # only; an operator that is skew there but not where the cotangent lives
        # would make A^T = -A wrong silently.
        lam = eqx.error_if(
            lam,
            carry.skewness > skewness_tolerance(dtype),
            "expm_multiply: method='skew-lanczos' needs a skew-symmetric operator "
            "(A^T = -A), but x^T A x != 0 for a Krylov vector x of the adjoint sweep; "
            "use method='arnoldi'",
        )
    return lam, carry.grad


def _transposed(cfg: _Config, matvec, params, apply, example):
    """``x -> A^T x`` for the adjoint's Krylov processes."""
    if cfg.symmetric:
        return apply
    if cfg.bordered:
        # A_aug^T = [[A, 0], [b^T, 0]]: the last entry of the adjoint state
        # (the adjoint of the constant) feeds nothing else and no parameter
        # gradient, so it is kept at zero and A_aug^T acts as the symmetric A,
        # which is A_aug itself on vectors with a zero last entry (no transpose).
        return lambda y: apply(y.at[-1].set(0.0))
    if cfg.skew:
        return lambda x: -apply(x)  # A^T = -A: no transpose needed
    return transpose_matvec(matvec, params, example)


def _sweep(
    sub_step, recorded: _ForwardRecord, g, carry: _BackwardCarry, lower, forward_side, side_state
):
    """Steps ``carry.j - 1`` down to ``lower``, their forward sides from ``forward_side``.

    ``forward_side(j, replay, side_state) -> ForwardSide`` (see
    :class:`~._checkpoint.ForwardSide`).
    """
    dtype = g.dtype

    def step(state):
        carry, side_state = state
        j = carry.j - 1
        tau = recorded.step_sizes[j].astype(dtype)
        forward = forward_side(j, carry.replay, side_state)
        sub = lax.while_loop(
            lambda c: (c.s_end > 0) & ~c.failed,
            functools.partial(
                sub_step, forward.propagator, forward.cotangent, recorded.krylov_sizes[j]
            ),
            _SubStep(
                tau,
                carry.lam,
                carry.grad,
                carry.sigma_suggest,
                carry.failed,
                carry.skewness,
                forward.step_state,
            ),
        )
        lam = sub.lam + _output_cotangent(recorded.output_steps, g, j)
        carry = _BackwardCarry(
            j, lam, sub.grad, sub.sigma_suggest, sub.failed, sub.skewness, forward.replay
        )
        return carry, sub.step_state

    carry, _ = lax.while_loop(lambda state: state[0].j > lower, step, (carry, side_state))
    return carry


def _sub_step(
    cfg_adjoint: _Config,
    apply_t,
    tol_rate,
    krylov_dim,
    prop_f,
    cotangent,
    forward_size,
    c: _SubStep,
):
    """One adjoint sub-step ``[s_start, s_end]`` inside a forward step, with its cotangent.

    The adjoint's Krylov decomposition from ``lam`` and its step size (own error
    control, cut short at the forward step's start), the quadrature matrix of
    the sub-step from both sides (:func:`~._small.two_sided_block`) and the
    forward side's ``cotangent`` of it.

    Krylov-size control (:func:`~._step._stop_at_step`): a sub-step that
    reaches the forward step's start cannot use a larger space, so its process
    may stop as soon as that sub-step meets the tolerance.  Each test costs two
    small exponentials of the full padded size (0.8 ms at ``k = 72``, five
    wave Lanczos vectors at 128^2 and many more on small grids), so tests run
    only where a smaller space is predicted.  With a finite step-size
    suggestion beyond the forward step's start: from the first chunk on (the
    adjoint's own history predicts it).  While the suggestion is still the
    initial ``inf`` (every sub-step so far reached its forward step's start at
    the first try, as on the wave): once, one chunk past the forward step's
    own size, and only in forward steps that stopped early themselves
    (``forward_size < krylov_dim``: cut short by an output time); the adjoint
    state, a data residual, is the rougher of the two.  On the 128^2 wave at
    tol 1e-8 every second forward step is such a step (20 vectors), and the
    adjoint stops at 30 vectors there instead of 72.
    """
    sigma_try = jnp.minimum(c.s_end, c.sigma_suggest)
    history = jnp.isfinite(c.sigma_suggest)
    clipped = jnp.where(history, c.s_end < c.sigma_suggest, forward_size < krylov_dim)
    chunk = cfg_adjoint.chunk
    once = forward_size + chunk  # the one test: the first chunk at or past this size
    min_size = jnp.where(history, 0, once)
    max_size = jnp.where(history, cfg_adjoint.krylov_dim, once + chunk)
    stop = _stop_at_step(
        cfg_adjoint, sigma_try, tol_rate, clipped, min_size=min_size, max_size=max_size
    )
    basis_b, projection_b, skewness, _ = _decompose_checked(cfg_adjoint, apply_t, c.lam, stop)
    prop_b = _propagator(cfg_adjoint, projection_b)
    sigma, _, _, sigma_next, trials, ok = _largest_step(cfg_adjoint, prop_b, sigma_try, tol_rate)
    reached = sigma >= c.s_end
    s_start = jnp.where(reached, 0.0, c.s_end - sigma)
    sigma = c.s_end - s_start
    c_start = prop_f.beta * prop_f.exp_times(s_start)
    m, lam_coef = two_sided_block(prop_f, prop_b, c_start, sigma)
    delta, step_state = cotangent(m, basis_b, c.step_state)
    grad = _add(c.grad, delta)
    clipped = reached & (trials == 0)
    sigma_suggest = jnp.where(clipped, jnp.maximum(c.sigma_suggest, sigma_next), sigma_next)
    return _SubStep(
        s_start,
        prop_b.beta * (lam_coef @ basis_b),
        grad,
        sigma_suggest,
        c.failed | ~ok,
        jnp.maximum(c.skewness, jnp.asarray(skewness, c.skewness.dtype)),
        step_state,
    )


def _backward_discrete(cfg: _Config, matvec, params, recorded: _ForwardRecord, g):
    from ._discrete import discrete_step

    taus, out_step = recorded.step_sizes, recorded.output_steps
    apply = functools.partial(_apply, matvec, params)
    replay0, state_at = reverse_states(cfg, apply, recorded)
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
