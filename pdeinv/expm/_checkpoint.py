"""Checkpoint policies: what the forward sweep keeps for the gradient, and how the adjoint uses it.

One small object per policy (as diffrax has one ``AbstractAdjoint`` per
adjoint method), each owning its buffers, their recording during the forward
sweep and their replay in the backward one; its tunables are its fields
(docs/design.md#checkpoint-policies):

* :class:`States`: the step-start states only; the backward sweep rebuilds
  every step's forward Krylov basis from its state.
* :class:`Bases`: every state and every forward basis (``max_steps * n *
  krylov_dim`` memory; small problems).
* :class:`Trajectory` (the default): the states, and for the first steps an
  orthonormal basis of a few vectors spanning the step's trajectory ``u(s)``,
  used wherever an a posteriori check allows.

Every policy keeps the thinned buffer of step-start states
(:func:`keep_state`, :func:`reverse_states`); the discrete adjoint and the
tangent's forward solve need nothing else.  ``expm_multiply``'s ``checkpoint``
strings map to these objects in :func:`checkpoint_policy` (the one place).

The interface, used by ``_expm._prepare`` (planning), ``_forward`` (recording),
``_reverse`` (replay) and ``pdeinv/cli/_robust.py`` (the memory plan):

``kept_states(checkpoints, max_steps)``
    Length of the state buffer.
``plan(n, k, kept, itemsize, method, gradient)``
    The policy with its buffer sizes fixed for one call (a static object).
``for_batch(size)``
    The planned policy for one of ``size`` solves batched by ``vmap``, whose
    records are all alive at once (:class:`Trajectory` shares its budget).
``planned_bytes(n, k, max_steps, checkpoints, itemsize, ..., batch=1)``
    Bytes of the state buffer with its replay segment and of the policy's buffers.
``init_buffers(cfg, n, dtype)`` / ``record(cfg, buffers, j, u, decomposition, tau, tol)``
    The policy's own buffers (beside the states) and their update at step ``j``.
``backward_passes(side, recorded)``
    The backward sweep's passes ``(lower, forward_side, side_state)``: steps
    down to ``lower`` take their forward side from ``forward_side`` (see
    :class:`ForwardSide` and :func:`~._reverse._backward_two_sided`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..krylov._common import params_cotangent_low_rank
from ._config import DEFAULT_CHECKPOINTS, replay_length
from ._cotangent import _add, _low_rank_cotangent, _singular_pairs
from ._small import trajectory_basis
from ._step import _advance, _decompose, _Projection, _propagator, _stop_at_size


class ForwardSide(NamedTuple):
    """The forward side of one step, as the backward sweep's sub-steps use it.

    ``cotangent(m, basis_b, step_state) -> (gradient, step_state)`` per
    sub-step, ``m`` the sub-step's quadrature matrix over the forward basis; the
    last ``step_state`` is the side state carried on to the next step.
    """

    propagator: Any
    cotangent: Callable
    replay: Any
    step_state: Any


class AdjointContext(NamedTuple):
    """What a policy's forward sides need from the backward sweep of one call."""

    cfg: Any  # _Config
    matvec: Callable
    params: Any
    apply: Callable  # u -> A u
    state_at: Callable  # (j, replay) -> (u_j, replay), see reverse_states
    krylov_sizes: Any  # (max_steps,) Krylov dimension of every forward step
    rank_tol: Any  # singular values of M below rank_tol * S_0 are dropped
    tol: Any
    exact_tangents: bool  # forward mode over the sweep (see _rules._adjoint_sweep)

    def rebuilt(self, j, u_j):
        """Forward basis and projection of step ``j`` recomputed from its start state."""
        return _decompose(self.cfg, self.apply, u_j, _stop_at_size(self.krylov_sizes[j]))


@dataclasses.dataclass(frozen=True)
class AbstractCheckpoint(abc.ABC):
    """A checkpoint policy (static: hashed into the compiled solver's configuration)."""

    name: ClassVar[str]

    def kept_states(self, checkpoints: int, max_steps: int) -> int:
        """Length of the step-start state buffer (rounded up to even when thinned)."""
        kept = min(int(checkpoints), int(max_steps))
        if kept < max_steps:
            kept += kept % 2  # thinning halves the buffer
        return kept

    def plan(self, *, n: int, k: int, kept: int, itemsize: int, method: str, gradient: str):
        """This policy with its buffer sizes fixed for ``n`` states of ``itemsize`` bytes."""
        del n, k, kept, itemsize, method, gradient
        return self

    def for_batch(self, size: int):
        """This planned policy for one of ``size`` solves that run as one batch.

        Called by the forward sweep's batching rule (``vmap`` with
        ``batching="auto"`` or ``"sequential"``, :func:`~pdeinv.krylov._batching.per_element`),
        where the records of all ``size`` solves are alive at once.
        """
        del size
        return self

    def buffer_elements(self, n: int, k: int, max_steps: int) -> int:
        """Array elements of the policy's own buffers (after :meth:`plan`)."""
        del n, k, max_steps
        return 0

    def planned_bytes(
        self,
        *,
        n: int,
        k: int,
        max_steps: int,
        checkpoints: int | None,
        itemsize: int,
        method: str = "arnoldi",
        gradient: str = "two-sided",
        batch: int = 1,
    ) -> dict:
        """Bytes one solve keeps for its gradient: ``{"states": ..., "policy": ...}``.

        ``states``: the kept step-start states and, when they are thinned, the
        replay segment; ``policy``: this policy's own buffers, for one of
        ``batch`` solves run as one ``vmap`` (see :meth:`for_batch`).  The same
        sizes ``expm_multiply`` allocates (``k`` already clipped to ``n``).
        """
        checkpoints = DEFAULT_CHECKPOINTS if checkpoints is None else checkpoints
        kept = self.kept_states(checkpoints, max_steps)
        segment = replay_length(kept, max_steps)
        states = (kept + (segment if kept < max_steps else 0)) * n
        planned = self.plan(
            n=n, k=k, kept=kept, itemsize=itemsize, method=method, gradient=gradient
        ).for_batch(batch)
        return {
            "states": itemsize * states,
            "policy": itemsize * planned.buffer_elements(n, k, max_steps),
        }

    def init_buffers(self, cfg, n: int, dtype):
        """The policy's own buffers (a pytree of arrays written once per step), or ``None``."""
        del cfg, n, dtype
        return None

    def record(self, cfg, buffers, j, u, decomposition, tau, tol):
        """``buffers`` with step ``j`` recorded; ``decomposition = (basis, projection, prop)``."""
        del cfg, j, u, decomposition, tau, tol
        return buffers

    @abc.abstractmethod
    def backward_passes(self, side: AdjointContext, recorded) -> list:
        """``[(lower, forward_side, side_state), ...]`` in the order the sweep runs them."""


@dataclasses.dataclass(frozen=True)
class States(AbstractCheckpoint):
    """Step-start states only (thinned to ``checkpoints``); every forward basis is rebuilt."""

    name: ClassVar[str] = "states"

    def backward_passes(self, side, recorded):
        return [(0, _states_side(side), ())]


@dataclasses.dataclass(frozen=True)
class Bases(AbstractCheckpoint):
    """Every step-start state and every forward Krylov basis with its projection."""

    name: ClassVar[str] = "bases"

    def kept_states(self, checkpoints, max_steps):
        # The buffers are indexed by step: every state is kept.
        return int(max_steps)

    def buffer_elements(self, n, k, max_steps):
        return max_steps * k * n

    def init_buffers(self, cfg, n, dtype):
        bases = jnp.zeros((cfg.max_steps, cfg.krylov_dim, n), dtype)
        return bases, _projection_buffers(cfg.max_steps, cfg.krylov_dim, dtype)

    def record(self, cfg, buffers, j, u, decomposition, tau, tol):
        basis, projection, _ = decomposition
        bases, projections = buffers
        return bases.at[j].set(basis), _Projection(
            *(buf.at[j].set(x) for buf, x in zip(projections, projection, strict=True))
        )

    def backward_passes(self, side, recorded):
        bases, projections = recorded.policy_buffers

        def forward_side(j, replay, side_state):
            projection_f = _Projection(*(buf[j] for buf in projections))
            return full_basis_side(side, bases[j], projection_f, replay, side_state)

        return [(0, forward_side, ())]


@dataclasses.dataclass(frozen=True)
class Trajectory(AbstractCheckpoint):
    """States, and for the first steps a ``rank``-vector basis of the step's trajectory.

    Parameters
    ----------
    rank
        Vectors per stored trajectory basis (at most ``krylov_dim``; none are
        stored when ``rank >= krylov_dim``, where the projection would store as
        much as the Krylov basis itself).
    budget_bytes
        Memory of the trajectory buffers of one compiled solve: the first
        ``slots`` steps get one (at most the kept states, as many as fit; none
        for ``n`` above about ``10^5`` in float64 with the defaults).  A batch
        of solves under ``vmap`` shares it (:meth:`for_batch`).
    fit_tol
        A sub-step's quadrature matrix is used in the stored span when that
        drops at most ``tol * fit_tol`` of it; a step whose trajectory samples
        miss more than ``10 tol fit_tol`` is not stored (its basis is rebuilt).
    slots, slot_bytes
        Set by :meth:`plan`: steps with a stored basis (0: the policy works as
        :class:`States`) and the bytes of one.

    Off (no slots) for ``"skew-lanczos"`` (oscillatory trajectories are never of
    low rank) and for ``gradient="discrete"``.
    """

    name: ClassVar[str] = "trajectory"
    rank: int = 8
    budget_bytes: int = 8 * 2**20
    fit_tol: float = 1e-2
    slots: int = 0
    slot_bytes: int = 0

    def plan(self, *, n, k, kept, itemsize, method, gradient):
        slots = slot_bytes = 0
        if gradient == "two-sided" and method != "skew-lanczos":
            rank = min(self.rank, k)
            if rank < k:  # else a projection would store as much as the basis itself
                slot_bytes = self._per_step(n, k) * itemsize
                slots = min(kept, self.budget_bytes // slot_bytes)
        return dataclasses.replace(self, slots=int(slots), slot_bytes=int(slot_bytes))

    def for_batch(self, size):
        """The budget shared by ``size`` solves: ``budget_bytes / size`` each.

        Under ``vmap`` the forward sweep runs all solves before the adjoint
        sweep runs any, so all their records are alive at once; on the CPU a
        batch of full per-solve budgets is one large buffer mapped afresh
        on every call (the reason for the cap, docs/design.md#trajectory-bases).
        Measured on 2-D heat (value and gradient, batched against a loop of
        single solves): 0.80x with 8 MiB per solve and 1.02x shared, 16
        experiments on 64^2; docs/scale.md#batched-vs-a-python-loop.
        """
        if not self.slots or size <= 1:
            return self
        return dataclasses.replace(
            self, slots=int(min(self.slots, self.budget_bytes // (size * self.slot_bytes)))
        )

    def _per_step(self, n, k):
        rank = min(self.rank, k)
        return (rank + 1) * n + k * (k + rank + 3)

    def buffer_elements(self, n, k, max_steps):
        return self.slots * self._per_step(n, k) if self.slots else 0

    def init_buffers(self, cfg, n, dtype):
        if not self.slots:
            return None
        slots, rank, k = self.slots, min(self.rank, cfg.krylov_dim), cfg.krylov_dim
        return (
            jnp.zeros((slots, rank, n), dtype),  # rows Q^T V of the stored basis
            jnp.zeros((slots, k, rank), dtype),  # Q
            jnp.zeros((slots,), bool),  # valid: the samples are of that rank
            jnp.zeros((slots, n), dtype),  # step-start state (to rebuild V)
            *_projection_buffers(slots, k, dtype),
        )

    def record(self, cfg, buffers, j, u, decomposition, tau, tol):
        """Store step ``j``'s trajectory basis, start state and small matrix (if ``j`` has a slot).

        The basis is ``Q^T V`` with ``Q`` the leading coefficients of
        :func:`~._small.trajectory_basis`: ``rank`` vectors of length ``n`` in
        place of the ``krylov_dim`` of ``V``.  A step whose trajectory samples
        are visibly not of that rank (first dropped singular value above ``10
        tol fit_tol``: oscillatory or rough states) is marked invalid and not
        projected; the backward sweep rebuilds its basis.
        """
        if not self.slots:
            return buffers
        basis, projection, prop = decomposition
        rank, n, k = min(self.rank, cfg.krylov_dim), u.shape[0], cfg.krylov_dim
        dtype = u.dtype
        fit_tol = tol * self.fit_tol

        def capture(_):
            q, miss = trajectory_basis(prop, tau, rank)
            valid = miss <= 10 * fit_tol
            rows = lax.cond(valid, lambda: q.T @ basis, lambda: jnp.zeros((rank, n), dtype))
            return rows, q, valid

        def skip(_):
            return jnp.zeros((rank, n), dtype), jnp.zeros((k, rank), dtype), jnp.zeros((), bool)

        rows, q, valid = lax.cond(j < self.slots, capture, skip, None)
        values = (rows, q, valid, u, *projection)
        return tuple(buf.at[j].set(x, mode="drop") for buf, x in zip(buffers, values, strict=True))

    def backward_passes(self, side, recorded):
        if recorded.policy_buffers is None:
            return [(0, _states_side(side), ())]
        # The record's own size: a batched forward sweep may have stored fewer
        # steps than this call's plan (for_batch).
        slots = recorded.policy_buffers[2].shape[0]
        n = recorded.states.shape[1]
        basis = jnp.zeros((side.cfg.krylov_dim, n), recorded.states.dtype)
        # Steps past the stored trajectories first (descending), then those stored.
        return [
            (slots, _states_side(side), ()),
            (0, self._trajectory_side(side, recorded), (basis, jnp.zeros((), bool))),
        ]

    def _trajectory_side(self, side: AdjointContext, recorded):
        """Forward side of step ``j`` from its stored trajectory basis ``U = Q^T V``.

        A sub-step's quadrature matrix ``M`` (over ``V``) is used as ``Q (Q^T M)``
        over ``U`` when that drops at most ``tol * fit_tol`` of it (Frobenius
        norms, relative); otherwise with the step's basis ``V``, rebuilt from
        its state at most once per step (at the start for a step the forward
        sweep marked invalid).  Measured on stiff heat (64^2, 128^2, tol 1e-4 ..
        1e-10): 4 to 8 vectors suffice except on the first step from a rough
        start vector; on the 32^2 wave example (oscillatory) never.

        The side state ``(basis, have)`` carries the rebuilt basis (and whether
        it is there) across sub-steps.  The rebuild is a loop of at most one
        pass rather than a cond: under vmap a cond with a batched predicate
        runs both branches for every element, the loop only while some element
        needs it.
        """
        cfg, matvec, params = side.cfg, side.matvec, side.params
        dtype = recorded.states.dtype
        fit_tol = (side.tol * self.fit_tol).astype(dtype)
        rank_tol = side.rank_tol
        floor = 10 * jnp.finfo(dtype).eps * np.sqrt(cfg.krylov_dim)

        def forward_side(j, replay, rebuilt_basis):
            rows, q, valid, u_j, *projection_f = (buf[j] for buf in recorded.policy_buffers)
            propagator = _propagator(cfg, _Projection(*projection_f))

            def ensure_basis(rebuilt_basis, need):
                def rebuild(state):
                    del state
                    return jnp.zeros((), bool), side.rebuilt(j, u_j)[0], jnp.ones((), bool)

                basis, have = rebuilt_basis
                _, basis, have = lax.while_loop(
                    lambda state: state[0], rebuild, (need & ~have, basis, have)
                )
                return basis, have

            if side.exact_tangents:
                # The trajectory basis represents M, not its tangent: forward mode
                # over this sweep takes every step's sum over the rebuilt basis.
                rebuilt_basis = ensure_basis((rebuilt_basis[0], jnp.zeros((), bool)), True)

                def exact(m, basis_b, rebuilt_basis):
                    grad = _low_rank_cotangent(
                        matvec, 1, params, m, rebuilt_basis[0], basis_b, rank_tol
                    )
                    return grad, rebuilt_basis

                return ForwardSide(propagator, exact, replay, rebuilt_basis)

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

            return ForwardSide(propagator, cotangent, replay, rebuilt_basis)

        return forward_side


_POLICIES = {cls.name: cls for cls in (Trajectory, States, Bases)}
CHECKPOINTS = tuple(_POLICIES)


def checkpoint_policy(checkpoint) -> AbstractCheckpoint:
    """The policy object of ``expm_multiply``'s ``checkpoint`` argument (a name or an object)."""
    if isinstance(checkpoint, AbstractCheckpoint):
        return checkpoint
    if isinstance(checkpoint, str) and checkpoint in _POLICIES:
        return _POLICIES[checkpoint]()
    raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")


def _states_side(side: AdjointContext):
    """Forward side of step ``j`` rebuilt from its (possibly replayed) start state."""

    def forward_side(j, replay, side_state):
        u_j, replay = side.state_at(j, replay)
        basis_f, projection_f = side.rebuilt(j, u_j)
        return full_basis_side(side, basis_f, projection_f, replay, side_state)

    return forward_side


def full_basis_side(side: AdjointContext, basis_f, projection_f, replay, side_state):
    """:class:`ForwardSide` of a step whose forward Krylov basis ``basis_f`` is at hand.

    Each sub-step's cotangent is the sum over the quadrature matrix's leading
    singular pairs (:func:`~._cotangent._low_rank_cotangent`).  On stiff
    (diffusive) steps a few pairs remain, each formed from the bases by
    matrix-vector products.  Oscillatory (skew) steps keep tens of pairs:
    on the 128^2 wave (``k_f = 60``, ``k_b = 72``) every sub-step's singular
    values fell to ``1e-2, 1e-4, 1e-6, 1e-8, 1e-12`` of the largest after
    4, 12, 15, 18, 22 of them, so about 20 pairs pass the cut at tol 1e-6
    (``tol * _RANK_TOL``) against the 60 VJPs and the full ``(60 x 72) @ (72
    x n)`` product of ``sum_p d<(M V_b)_p, A V_f e_p>``.  Their vectors are
    formed ``_SKEW_BLOCK`` pairs at a time (one matrix product per block and
    basis; one pair at a time, every pair reads both bases, which was slower
    than the full product).  Value+gradient 0.86x / 0.86x / 0.73x the CPU time
    of the full form at tol 1e-4 / 1e-6 / 1e-8, same gradient errors
    (docs/design.md#waves-a-skew-symmetric-form).
    """
    cfg, matvec, params = side.cfg, side.matvec, side.params
    propagator = _propagator(cfg, projection_f)
    block = _SKEW_BLOCK if cfg.skew else 1

    def cotangent(m, basis_b, side_state):
        grad = _low_rank_cotangent(matvec, block, params, m, basis_f, basis_b, side.rank_tol)
        return grad, side_state

    return ForwardSide(propagator, cotangent, replay, side_state)


# Pairs per block of the skew (oscillatory) cotangent sums: see full_basis_side.
# 8 and 24 (one block for the ~20 pairs of the 128^2 wave) measured alike within
# the noise; 16 was slower (two blocks); 8 keeps less memory.
_SKEW_BLOCK = 8


def _projection_buffers(count, k, dtype):
    """A :class:`_Projection` of zero buffers for ``count`` decompositions."""
    return _Projection(
        jnp.zeros((count, k, k), dtype),
        jnp.zeros((count,), dtype),
        jnp.zeros((count,), dtype),
        jnp.zeros((count,), jnp.int32),
    )


# ---------------------------------------------------------------------------
# The step-start states every policy keeps.


def keep_state(cfg, us, stride, j, u):
    """Store the state ``u`` at the start of step ``j`` in the checkpoint buffer.

    The buffer holds ``cfg.checkpoints`` states, those of steps ``0, stride,
    2 stride, ...``.  When it is full, every second one is dropped and the stride
    doubles (so memory does not grow with ``max_steps``); the backward sweep
    replays the dropped steps from the kept ones (:func:`reverse_states`).
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


def reverse_states(cfg, apply, recorded):
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
