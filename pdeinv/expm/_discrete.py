"""One Krylov step differentiated exactly (the paper's discrete adjoint)."""

from __future__ import annotations

from ..krylov import arnoldi, lanczos
from ..krylov._dense import expm_small


def discrete_step(cfg, matvec, u, params, tau):
    """``beta V exp(tau H) e1`` with gradients from the Arnoldi/Lanczos adjoints.

    This is the exact derivative of the Krylov approximation of one step
    (Krämer et al. 2024).  For stiff operators it can differ from the derivative
    of the true solution by orders of magnitude even when the value is
    converged (docs/design.md#the-discrete-adjoint), which is why it is not the default.
    """
    if cfg.symmetric:
        dec = lanczos(matvec, u, params, cfg.krylov_dim, reorthogonalize=cfg.reorthogonalize)
    else:
        dec = arnoldi(matvec, u, params, cfg.krylov_dim, reorthogonalize=cfg.reorthogonalize)
    return dec.norm * (dec.basis @ expm_small(tau * dec.small)[:, 0])
