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

One module per concern: ``_config.py`` (methods, tunables, the static
configuration of a call), ``_step.py`` (a step's Krylov decomposition,
propagator and step-size control), ``_checkpoint.py`` (the checkpoint policies:
their buffers, recording and replay), ``_forward.py`` (the forward sweep and its
record), ``_reverse.py`` (the two-sided and discrete reverse sweeps),
``_cotangent.py`` (a step's parameter cotangent from its quadrature matrix),
``_rules.py`` (forward mode and the wiring of both rules into JAX,
docs/design.md#forward-mode) and this module: argument checks and the public
functions.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._threads import SLOW_KRYLOV_DIM, blas_threads
from ..krylov._batching import BATCHINGS
from ..krylov._common import (
    check_finite,
    check_finite_params,
    check_matvec,
    check_vector,
)
from ..krylov._skew import skewness_tolerance
from ._checkpoint import checkpoint_policy
from ._config import (
    DEFAULT_CHECKPOINTS,
    GRADIENTS,
    METHODS,
    ExpmStats,
    _Config,
    adjoint_krylov_dim,
)
from ._rules import expm_core as _expm_core

PyTree = Any

_WHERE = "expm_multiply"


# The differentiation rules need the sweeps above (imported from here).


def _check_concrete(name, value, check, message):
    """Run a value check when ``value`` is concrete; under tracing defer to runtime."""
    try:
        concrete = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    if not check(concrete):
        raise ValueError(f"{name}: {message}")
    return True


def _eagerly(compute):
    """``compute()`` evaluated now, or ``None`` where it needs traced values.

    Under a caller's ``jit`` the inputs may be concrete (closed over) while every
    operation is staged; ``ensure_compile_time_eval`` evaluates them anyway.  A
    ``matvec`` that closes over traced values cannot be evaluated: then the
    solve's own run-time checks apply.
    """
    try:
        with jax.ensure_compile_time_eval():
            return compute()
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerArrayConversionError,
        jax.errors.TracerBoolConversionError,
    ):
        return None


def _check_skew(matvec, v, params):
    """ValueError if ``x^T A x != 0`` for ``x = v`` or a random ``x`` (concrete inputs only).

    Under tracing the forward sweep checks every Krylov vector instead and
    raises at run time (see :func:`~pdeinv.krylov._skew.skewness_tolerance`).
    """
    leaves = jax.tree_util.tree_leaves((v, params))
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return
    probe = np.random.default_rng(0).standard_normal(v.shape[0]).astype(v.dtype)

    def measure():
        out = []
        for x in (v, jnp.asarray(probe)):
            ax = matvec(x, params)
            out.append((float(jnp.dot(x, ax)), float(jnp.linalg.norm(x) * jnp.linalg.norm(ax))))
        return out

    for dot, scale in _eagerly(measure) or ():
        if scale > 0 and abs(dot) > skewness_tolerance(v.dtype) * scale:
            raise ValueError(
                "method='skew-lanczos' needs a skew-symmetric operator (A^T = -A), but "
                f"x^T A x = {dot:.3g} for a vector x with ||x|| ||A x|| = "
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
    last = _eagerly(lambda: float(matvec(jnp.asarray(probe), params)[-1]))
    if last is not None and abs(last) > 0:
        raise ValueError(
            "method='affine-lanczos' needs the augmented operator [[A, b], [0, 0]] of "
            "augment_affine (a zero last row), but A x has last entry "
            f"{last:.3g}; use method='arnoldi'"
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
    batching,
):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    policy = checkpoint_policy(checkpoint)
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
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
    kept = policy.kept_states(int(checkpoints), int(max_steps))
    v = jnp.asarray(v)
    if v.ndim == 1 and not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    v = check_vector(v, _WHERE)
    tol = check_tol(tol, v.dtype)
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
    if method == "affine-lanczos" and k < 2:
        # Its first basis vector is the augmented state itself: one vector spans
        # no step (the projection is 0 and the state would never move).
        raise ValueError(
            f"krylov_dim must be >= 2 for method='affine-lanczos' (the first Krylov "
            f"vector is the augmented state itself), got {krylov_dim!r}"
        )
    _warn_blas_threads(k)
    policy = policy.plan(
        n=n, k=k, kept=kept, itemsize=v.dtype.itemsize, method=method, gradient=gradient
    )
    cfg = _Config(
        method=method,
        krylov_dim=k,
        max_steps=int(max_steps),
        gradient=gradient,
        reorthogonalize=bool(reorthogonalize),
        checkpoint=policy,
        checkpoints=kept,
        batching=batching,
        adjoint_krylov_dim=adjoint_krylov_dim(method, k, n),
    )
    return cfg, v, ts, tol, scalar_t, params


def check_tol(tol, dtype):
    """``tol`` as a 0-d array of ``dtype``: a positive finite number, or a traced scalar.

    A traced ``tol`` (e.g. an argument of the caller's ``jit``) lets one
    compiled solve run at any accuracy; its value is checked at run time.  A
    concrete one is checked as the solve will see it, in ``dtype`` (``1e-50``
    is 0 in float32).
    """
    bad = f"tol must be a positive finite number, got {tol!r}"
    if isinstance(tol, (bool, np.bool_, str)) or tol is None:
        raise ValueError(bad)
    try:
        array = jnp.asarray(tol)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(bad) from None
    if array.ndim != 0 or not (
        jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
    ):
        raise ValueError(f"tol must be a positive finite number (a real scalar), got {tol!r}")
    if isinstance(array, jax.core.Tracer):
        array = array.astype(dtype)
        return eqx.error_if(
            array, ~(jnp.isfinite(array) & (array > 0)), "expm_multiply: tol must be > 0 and finite"
        )
    with np.errstate(over="ignore", under="ignore"):
        value = np.asarray(array).astype(dtype)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{bad} (as {np.dtype(dtype).name}: {value})")
    return jnp.asarray(value)


def _warn_blas_threads(k: int) -> None:
    """Warn when ``k x k`` LAPACK kernels will run under oversubscribed BLAS threads."""
    if k < SLOW_KRYLOV_DIM or jax.default_backend() != "cpu":
        return
    threads = blas_threads()
    if threads == 1:
        return
    warnings.warn(
        f"expm_multiply: krylov_dim={k} on CPU with {threads} BLAS threads: the "
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
    except (jax.errors.JaxRuntimeError, eqx.EquinoxRuntimeError, ValueError) as err:
        # jaxlib's text has "..._EquinoxRuntimeError: <message>", equinox's own
        # (eager checks run through its filter_jit) "equinox.EquinoxRuntimeError: <message>".
        # Once a compiled solve has run, jaxlib's fast dispatch path raises the same
        # callback text as a ValueError; a ValueError without it (bad input) passes.
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
    batching: str = "auto",
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
        (with respect to ``v`` and every leaf of ``params``).  A number, or a
        scalar array that may be traced (e.g. an argument of your ``jit``): one
        compiled solve then serves every tol, and its value is checked at run
        time.
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
        against the basis), the adjoint plain Lanczos.  Both modes treat the
        last entry of ``v`` as a constant (forward mode drops its tangent) and
        reverse mode ignores cotangents on the last entry of the result (both
        are the affine bookkeeping, not part of the state ``u``): their
        derivatives come out zero, the same in both modes.  Concrete inputs whose
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
        about ``10^5`` in float64; a ``vmap`` batch shares the 8 MiB, see
        ``batching``), an orthonormal basis of 8 vectors spanning the
        step's trajectory ``u(s)``.  The backward sweep uses it wherever a
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
    batching
        How ``jax.vmap`` of this call (and of its gradient, ``jax.jacrev``,
        ``jax.jacfwd``) runs the batch.  ``"sequential"``: the elements one
        after another inside the one compiled program (a ``lax.map`` of
        unbatched solves; arguments not batched are shared, not copied), each
        stopping when it is done.  ``"lockstep"``: batched arithmetic (plain
        ``vmap``); every adaptive loop runs until its slowest element is done,
        both sides of every branch are evaluated.  ``"auto"`` (default):
        sequential when compiled for CPU, lockstep for GPU/TPU, where batching
        is what fills the device.  Values are the same either way (to
        rounding); on a 2-core CPU sequential was about 2x faster than lockstep
        for 64 heat solves (docs/scale.md#batched-vs-a-python-loop).  Under
        ``"sequential"`` and ``"auto"`` the ``B`` solves of a batch share the
        trajectory checkpoints' 8 MiB (all their records are alive at once),
        so each stores fewer trajectory bases than a single call would and its
        gradient can differ from that call's by the trajectory check's
        tolerance (``tol / 100`` relative), not only by rounding.  Without
        ``vmap`` it has no effect.

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
    Second derivatives by forward over reverse (``jax.hessian``, ``jax.jvp``
    of ``jax.grad``) work for ``"lanczos"``, ``"skew-lanczos"`` and
    ``"affine-lanczos"`` (the adjoint sweep has its own forward-mode rule;
    checked to ``tol`` against dense second derivatives, and for the affine
    process against differences of the gradient); other second derivatives and forward mode with
    ``gradient="discrete"`` raise ``NotImplementedError``.

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
        batching=batching,
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
    batching: str = "auto",
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
        batching=batching,
    )
    y, stats = _call(matvec, v, params, t, options)
    ints = ExpmStats(*(jnp.asarray(s).astype(jnp.int32) for s in stats[:3]), stats.error_estimate)
    return y, ints
