"""The reverse sweeps: the two-sided adjoint (default) and the discrete one.

Both walk the forward steps backwards from a :class:`~._forward._ForwardRecord`;
dropped step-start states are replayed (:func:`_reverse_states`).  The
mathematics: docs/design.md#the-two-sided-adjoint.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..krylov._common import (
    params_cotangent,
    params_cotangent_low_rank,
    transpose_matvec,
)
from ._config import _RANK_TOL, _TRAJECTORY_TOL, _Config
from ._forward import _ForwardRecord
from ._small import _svd, two_sided_block
from ._step import (
    _advance,
    _apply,
    _decompose,
    _largest_step,
    _Projection,
    _propagator,
    _stop_at_size,
    _stop_at_step,
)


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


def _backward_two_sided(
    cfg: _Config, matvec, params, recorded: _ForwardRecord, g, tol, *, exact_tangents=False
):
    """``(v_bar, params_bar)``: the two-sided adjoint sweep for the output cotangents ``g``.

    ``exact_tangents`` (static) when the sweep is itself differentiated in
    forward mode (``jax.jvp`` of ``jax.grad``): the trajectory checkpoints then
    rebuild every step's basis, because the stored trajectory basis spans the
    quadrature matrix but not its tangent (see :func:`_low_rank_cotangent_jvp`).
    """
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
            # low-rank pairs: each sub-step takes its k VJPs with the rows of
            # M V_b.  (Accumulating sum M V_b over a step's sub-steps and taking
            # the VJPs once cost more: the (k, n) block's zero start, sums and
            # while-loop copies outweighed the VJPs, 16 ms against 6 ms per
            # step on the 128^2 wave, now that the adjoint mostly covers a
            # forward step in one sub-step, see _config.adjoint_krylov_dim.)
            # Chosen per method, not per sub-step: under vmap a data-dependent
            # choice would run both.
            def cotangent(m, basis_b, side_state):
                return params_cotangent(matvec, params, basis_f, m @ basis_b), side_state

            return _propagator(cfg, projection_f), cotangent, replay, side_state

        def cotangent(m, basis_b, side_state):
            grad = _low_rank_cotangent(matvec, params, m, basis_f, basis_b, rank_tol)
            return grad, side_state

        return _propagator(cfg, projection_f), cotangent, replay, side_state

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

        if exact_tangents:
            # The trajectory basis represents M, not its tangent: forward mode
            # over this sweep takes every step's sum over the rebuilt basis.
            rebuilt_basis = ensure_basis((rebuilt_basis[0], jnp.zeros((), bool)), True)

            def cotangent(m, basis_b, rebuilt_basis):
                grad = _low_rank_cotangent(matvec, params, m, rebuilt_basis[0], basis_b, rank_tol)
                return grad, rebuilt_basis

            propagator = _propagator(cfg, _Projection(*projection_f))
            return propagator, cotangent, replay, rebuilt_basis

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
        return _propagator(cfg, projection_f), cotangent, replay, rebuilt_basis

    def sweep(carry: _BackwardCarry, lower, forward_side, side_state):
        """Steps ``carry.j - 1`` down to ``lower``, their forward sides from ``forward_side``.

        ``forward_side(j, replay, side_state) -> (propagator, cotangent, replay,
        step_state)``: ``cotangent(m, basis_b, step_state) -> (gradient,
        step_state)`` per sub-step; the last ``step_state`` is the side state
        carried on to the next step.
        """

        def step(state):
            carry, side_state = state
            j = carry.j - 1
            tau = taus[j].astype(dtype)
            prop_f, cotangent, replay, step_state = forward_side(j, carry.replay, side_state)

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
                grad = _add(c.grad, delta)
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
            lam = sub.lam + _output_cotangent(out_step, g, j)
            carry = _BackwardCarry(j, lam, sub.grad, sub.sigma_suggest, sub.failed, replay)
            return carry, sub.step_state

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
    """Leafwise ``a + b`` of two gradients; ``float0`` leaves (integer params) stay as they are."""
    return jax.tree_util.tree_map(lambda x, y: x if x.dtype == jax.dtypes.float0 else x + y, a, b)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
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

    Differentiated (forward mode over this sweep: ``jax.jvp`` of ``jax.grad``)
    by its own rule, :func:`_low_rank_cotangent_jvp`.
    """
    left, right, keep = _singular_pairs(m, rank_tol)
    return params_cotangent_low_rank(matvec, params, left, basis_f, right, basis_b, keep)


@_low_rank_cotangent.defjvp
def _low_rank_cotangent_jvp(matvec, primals, tangents):
    """Tangent of the truncated sum: the pairs' own, plus ``dM`` in full.

    Differentiating the truncated factors would miss the part of ``dM`` outside
    the kept singular subspaces, which is as large as ``dM`` itself (a
    perturbation rotates those subspaces), so the sum's tangent is taken as
    ``sum_pq dM_pq X_pq + sum_r S_r dX_r`` with the pairs of ``M`` held fixed
    in the second term; ``dM`` goes through its own numerical-rank SVD.
    """
    params, m, basis_f, basis_b, rank_tol = primals
    dparams, dm, dbasis_f, dbasis_b, _ = tangents
    left, right, keep = _singular_pairs(m, rank_tol)

    def with_pairs_fixed(params, basis_f, basis_b):
        return params_cotangent_low_rank(matvec, params, left, basis_f, right, basis_b, keep)

    out, dout = jax.jvp(with_pairs_fixed, (params, basis_f, basis_b), (dparams, dbasis_f, dbasis_b))
    dleft, dright, dkeep = _singular_pairs(dm, rank_tol)
    from_dm = params_cotangent_low_rank(matvec, params, dleft, basis_f, dright, basis_b, dkeep)
    return out, _add(dout, from_dm)


def _singular_pairs(m, rank_tol):
    """``(U^T, S W^T, count)`` of ``M = U S W^T``, ``count`` pairs above ``rank_tol * S_0``."""
    # The SVD only chooses the factors (U square and orthonormal, so S W^T =
    # U^T M); it is taken without derivative, which is undefined at repeated
    # singular values.  Forward mode over the sweep gets the tangent of the
    # truncated sum from _low_rank_cotangent_jvp, not from these factors.
    u, svals, _ = _svd(lax.stop_gradient(m))
    keep = jnp.sum(svals > rank_tol * svals[0])
    return u.T, u.T @ m, keep


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
