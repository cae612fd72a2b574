"""Configuration of one integrator call: methods, tunables, :class:`_Config` and :class:`ExpmStats`.

Every other module of the integrator reads its static choices from ``_Config``
(built once per call by ``_expm._prepare``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._checkpoint import AbstractCheckpoint

METHODS = ("arnoldi", "lanczos", "skew-lanczos", "affine-lanczos")
GRADIENTS = ("two-sided", "discrete")
# Bounds of the step-size controller (factor per trial, factor to the next step).
_SHRINK_MIN, _GROW_MAX, _SAFETY = 0.01, 5.0, 0.9
_MAX_TRIALS = 60
# States kept for the gradient by default (``checkpoints=None``).
DEFAULT_CHECKPOINTS = 32
# Singular values of a backward sub-step's quadrature matrix below
# ``tol * _RANK_TOL`` times the largest are dropped (see _cotangent._low_rank_cotangent).
_RANK_TOL = 1e-3
# (The checkpoint policies' tunables are their fields: _checkpoint.py.)


def replay_length(kept: int, max_steps: int) -> int:
    """Largest stride between ``kept`` states (a power of two), the replay buffer's size."""
    stride = 1
    while kept * stride < max_steps:
        stride *= 2
    return stride


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


@dataclasses.dataclass(frozen=True)
class _Config:
    method: str
    krylov_dim: int
    max_steps: int
    gradient: str
    reorthogonalize: bool
    # The checkpoint policy, planned for this call (_checkpoint.py).
    checkpoint: AbstractCheckpoint
    # States kept for the gradient (see _checkpoint.keep_state); equal to
    # max_steps: never thinned.
    checkpoints: int
    # How vmap runs the sweeps (see _batching.py): "auto", "sequential", "lockstep".
    batching: str = "auto"
    # Largest Krylov dimension of the adjoint's processes; 0: ``krylov_dim``
    # (see :func:`adjoint_krylov_dim`).
    adjoint_krylov_dim: int = 0
    # Arnoldi orthogonalises against the last ``window`` basis vectors only
    # (incomplete orthogonalisation), 0: against all.  Set for the tangent's
    # block operator only (see _rules._sensitivity_config).
    window: int = 0
    # > 0: the step-size control also holds the error of the first ``error_rows``
    # entries of the state to ``tol`` relative to their own norm (the tangent
    # half of the block state, see _rules._sensitivity_config and
    # _step._weighted_scale); 0: the whole state only.
    error_rows: int = 0

    def for_batch(self, size: int) -> _Config:
        """This configuration for one of ``size`` solves batched by ``vmap`` (see _checkpoint)."""
        return dataclasses.replace(self, checkpoint=self.checkpoint.for_batch(size))

    @property
    def replay_length(self) -> int:
        """Largest stride between kept states (a power of two), the replay buffer's size."""
        return replay_length(self.checkpoints, self.max_steps)

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
        if self.adjoint_krylov_dim and self.adjoint_krylov_dim != self.krylov_dim:
            return dataclasses.replace(
                self, krylov_dim=self.adjoint_krylov_dim, adjoint_krylov_dim=0
            )
        return self

    @property
    def skew(self) -> bool:
        return self.method == "skew-lanczos"

    @property
    def bordered(self) -> bool:
        """Projections ``[[0, 0], [gamma e1, T]]`` of the affine Lanczos process."""
        return self.method == "affine-lanczos"

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


def adjoint_krylov_dim(method: str, krylov_dim: int, n: int) -> int:
    """Largest Krylov dimension of the adjoint's processes for a forward ``krylov_dim``.

    Skew (oscillatory) operators: ``krylov_dim`` plus a fifth, at most ``n``.
    Their adjoint state (data residuals, rough in space) spans more of the
    spectrum than the smooth forward state, so at equal dimension the adjoint
    covers a forward step only in two sub-steps, each paying one ``(k, k) @
    (k, n)`` product for the quadrature block and a fresh Krylov process.
    Krylov-size control stops the adjoint's processes as soon as a sub-step
    meets the tolerance in forward steps cut short by an output time; in
    full-length steps the adjoint uses all its vectors, and one sub-step
    covers the step instead of two.  Measured on the 128^2 wave (``krylov_dim`` 60,
    one core): value+gradient 760-820 ms at 60, 544 ms at 72, 652 ms at 90
    (tol 1e-6); 1015 against 860 ms at tol 1e-8; unchanged on 64^2.  Other
    methods keep ``krylov_dim``.
    """
    if method != "skew-lanczos":
        return krylov_dim
    return min(n, krylov_dim + -(-krylov_dim // 5))
