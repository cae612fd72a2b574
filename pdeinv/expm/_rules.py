"""Differentiation rules of the integrator: one tangent rule, its transpose is the adjoint.

``expm_core`` is a ``jax.custom_jvp`` function.  Its JVP rule runs the forward
sweep (recording what the adjoint needs) and returns the tangent as a call of
the primitive ``expm_tangent``, which is linear in the input tangents
``(dv, dparams, dts)``:

* evaluating it (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) computes the
  forward sensitivity with its own error control (:func:`_tangent_two_sided`);
* transposing it (``jax.grad``, ``jax.vjp``, ``jax.jacrev``) runs the adjoint
  sweep on the recorded forward (:func:`_transpose`).

So forward and reverse mode share one function, JAX's own linearize/transpose
machinery decides which rule runs, and ``vmap`` batches either (the primitive
is batched by mapping its rules, as lineax does for linear solves).  See
docs/design.md#forward-mode.
"""

from __future__ import annotations

import functools

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from ..krylov._batching import per_element
from ._checkpoint import States
from ._config import _Config
from ._forward import _forward, _stats_as_floats
from ._reverse import _backward_discrete, _backward_two_sided


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def expm_core(cfg: _Config, matvec, v, params, ts, tol):
    """``(exp(ts_i A(params)) v for each i, stats)``; differentiable in both modes."""
    ys, stats, _ = _forward(cfg, matvec, v, params, ts, tol, record=False)
    return ys, _stats_as_floats(stats, v.dtype)


@expm_core.defjvp
def _expm_core_jvp(cfg, matvec, primals, tangents):
    v, params, ts, tol = primals
    dv, dparams, dts, _ = tangents
    if cfg.symmetric or cfg.skew or cfg.bordered:
        ys, stats, recorded = _forward(cfg, matvec, v, params, ts, tol, record=True)
    else:
        ys, stats, recorded = _recorded_forward_first_order(cfg, matvec, v, params, ts, tol)
    stats = _stats_as_floats(stats, v.dtype)
    (dys,) = eqxi.filter_primitive_bind(
        _tangent_p, cfg, matvec, (v, params, ts, tol, ys, recorded), (dv, dparams, dts)
    )
    return (ys, stats), (dys, jax.tree_util.tree_map(jnp.zeros_like, stats))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _recorded_forward_first_order(cfg, matvec, v, params, ts, tol):
    """The recording forward sweep of Arnoldi, refusing a second derivative.

    Their steps use the small-matrix Padé exponential, which has a reverse rule
    only; without this rule forward mode over the sweep would end in jax's
    generic custom_vjp error.
    """
    return _forward(cfg, matvec, v, params, ts, tol, record=True)


@_recorded_forward_first_order.defjvp
def _recorded_forward_first_order_jvp(cfg, matvec, primals, tangents):
    raise NotImplementedError(
        f"expm_multiply: second derivatives (jax.hessian, jax.jvp of jax.grad) are supported "
        f"for method='lanczos', 'skew-lanczos' and 'affine-lanczos', not for "
        f"method={cfg.method!r} "
        "(its small-matrix exponential has a reverse rule only); first derivatives work in "
        "both modes, and Gauss-Newton products need first derivatives only"
    )


# ---------------------------------------------------------------------------
# The tangent: a forward sensitivity solve.


class _SensitivityMatvec:
    """Matvec of the block operator ``[[A, dA / alpha], [0, A]]`` on ``[x; w]``.

    ``exp(t B) [dv; alpha v] = [J(t) (dv, dA); alpha exp(t A) v]``: the top block
    is the tangent of ``exp(t A(params)) v`` in the direction ``(dv, dparams)``
    (the Fréchet derivative of the exponential, written as one exponential of a
    twice larger operator).  ``params`` of the block operator are
    ``(params, dparams, 1 / alpha)``; ``dA w`` and ``A w`` come from one JVP of
    ``matvec``.  Equal (and hashed) by the wrapped matvec, so that the solver
    compiled for it is reused.
    """

    def __init__(self, matvec):
        self.matvec = matvec

    def __eq__(self, other):
        return isinstance(other, _SensitivityMatvec) and other.matvec == self.matvec

    def __hash__(self):
        return hash((_SensitivityMatvec, self.matvec))

    def __call__(self, z, block_params):
        params, dparams, inv_alpha = block_params
        n = z.shape[0] // 2
        x, w = z[:n], z[n:]
        aw, daw = jax.jvp(lambda p: self.matvec(w, p), (params,), (dparams,))
        return jnp.concatenate([self.matvec(x, params) + inv_alpha * daw, aw])


def _sensitivity_config(cfg: _Config, n: int) -> _Config:
    """Integrator settings of the block operator ``[[A, dA], [0, A]]``: Arnoldi.

    The block operator is not normal, so its projection is a full Hessenberg
    matrix in general.  For a symmetric or skew-symmetric ``A`` (``dA`` of the
    same kind), and for the bordered affine one, each Krylov vector needs
    orthogonalising against the previous two only (``window``, see
    :func:`~pdeinv.krylov._arnoldi.arnoldi_process`): as accurate as full
    CGS2 (docs/design.md#forward-mode) at the cost of a three-term recurrence.

    For a skew (oscillatory) ``A`` the windowed process also gets twice the
    forward solve's Krylov dimension (at most ``2 n``, the block state's size):
    measured with ``jax.jvp`` on the wave against the forward dimension (tol
    1e-8), 9 % (64^2) and 16 % (128^2) faster and, at 128^2, a tangent error of
    1.3e-7 instead of 1.1e-6 (114 tol).  The block basis then holds
    ``4 n krylov_dim`` numbers.  For heat it bought 4-5 % at 64^2 and 128^2 but
    cost 30 % at 32^2 (Newton--CG on examples/heat.yaml), so the other
    operators keep the forward dimension, except where that was capped at
    ``n``: a dimension of ``n`` on the ``2 n`` block state can leave a stiff
    block solve unable to take a step.
    """
    short = cfg.symmetric or cfg.skew or cfg.bordered
    if cfg.skew:
        krylov_dim = min(2 * n, _TANGENT_DIM_FACTOR * cfg.krylov_dim)
    else:
        krylov_dim = 2 * n if cfg.krylov_dim >= n else cfg.krylov_dim
    return _Config(
        method="arnoldi",
        krylov_dim=krylov_dim,
        max_steps=cfg.max_steps,
        gradient="two-sided",
        reorthogonalize=not short,
        checkpoint=States(),
        checkpoints=cfg.checkpoints,
        batching=cfg.batching,
        window=_TANGENT_WINDOW if short else 0,
        error_rows=n,
    )


# Basis vectors the tangent's block process orthogonalises against when ``A`` is
# symmetric, skew or bordered, and its Krylov dimension over the forward solve's
# when ``A`` is skew (see _sensitivity_config).
_TANGENT_WINDOW = 2
_TANGENT_DIM_FACTOR = 2


def _tangent_two_sided(cfg, matvec, residuals, linear):
    """Tangent ``dys`` of the forward solve in the direction ``(dv, dparams, dts)``.

    The block state is scaled, ``[dv; alpha v]`` with ``alpha ||v|| = ||dv|| +
    t_final ||dA v||`` (the size of the tangent over the interval when nothing
    decays), so that the block solve's relative error control, which measures
    the whole state, is an error control of the tangent.
    """
    v, params, ts, tol, ys, _ = residuals
    dv, dparams, dts = linear
    if cfg.bordered:
        # The augmented state's last entry is the constant of the affine
        # bookkeeping: constant in reverse mode (its cotangent is dropped), so
        # here too, or jacfwd and jacrev would differ in that column.
        dv = dv.at[-1].set(0.0)
    dtype = v.dtype
    dav = jax.jvp(lambda p: matvec(v, p), (params,), (dparams,))[1]
    v_norm = jnp.linalg.norm(v)
    scale = jnp.linalg.norm(dv) + ts[-1].astype(dtype) * jnp.linalg.norm(dav)
    alpha = jnp.where((v_norm > 0) & (scale > 0), scale / jnp.where(v_norm > 0, v_norm, 1), 1.0)
    block = _SensitivityMatvec(matvec)
    z0 = jnp.concatenate([dv, alpha * v])
    zs, _ = expm_core(
        _sensitivity_config(cfg, v.shape[0]), block, z0, (params, dparams, 1.0 / alpha), ts, tol
    )
    return zs[:, : v.shape[0]] + _time_tangent(matvec, params, ys, dts)


def _time_tangent(matvec, params, ys, dts):
    """``d y_i = dts_i A y_i`` (the state's time derivative at each output time)."""
    ay = jax.vmap(matvec, in_axes=(0, None))(ys, params)
    return dts[:, None].astype(ys.dtype) * ay


def _tangent(cfg, matvec, residuals, linear):
    if cfg.gradient == "discrete":
        # The discrete adjoint is the reverse rule of the Krylov process itself
        # (Krämer et al. 2024), which has no forward counterpart here.
        raise NotImplementedError(
            "expm_multiply: gradient='discrete' supports reverse mode only (jax.grad, jax.vjp); "
            "forward mode (jax.jvp, jax.jacfwd, jax.linearize) needs gradient='two-sided'"
        )
    return _tangent_two_sided(cfg, matvec, residuals, linear)


# ---------------------------------------------------------------------------
# Its transpose: the adjoint sweep.


def _transpose(cfg, matvec, residuals, g):
    """``(dv, dparams, dts)`` cotangents of the tangent map for the output cotangent ``g``."""
    v, params, ts, tol, ys, recorded = residuals

    def sweep(params, recorded, g, tol):
        if cfg.gradient == "two-sided":
            return _adjoint_sweep(cfg, matvec, params, recorded, g, tol)
        return _backward_discrete(cfg, matvec, params, recorded, g)

    # Under vmap (jax.jacrev, per-experiment gradients) the adjoint sweeps run
    # as cfg.batching says (see _batching.py).
    v_bar, params_bar = per_element(sweep, cfg.batching)(params, recorded, g, tol)
    # d y_i / d t_i = A y_i.
    ay = jax.vmap(matvec, in_axes=(0, None))(ys, params)
    ts_bar = jnp.sum(g * ay, axis=1).astype(ts.dtype)
    return v_bar, params_bar, ts_bar


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _adjoint_sweep(cfg, matvec, params, recorded, g, tol):
    """The two-sided adjoint sweep, with a rule for forward mode over it.

    Forward mode over the sweep (``jax.jvp`` of ``jax.grad``, a Hessian-vector
    product) differentiates the sweep with ``exact_tangents``: every step's
    quadrature sum over its rebuilt basis, whose tangent is exact (the
    trajectory checkpoints' stored basis spans the quadrature matrix, not its
    tangent).  Plain reverse mode keeps the cheaper path.
    """
    return _backward_two_sided(cfg, matvec, params, recorded, g, tol)


@_adjoint_sweep.defjvp
def _adjoint_sweep_jvp(cfg, matvec, primals, tangents):
    def sweep(params, recorded, g, tol):
        return _backward_two_sided(cfg, matvec, params, recorded, g, tol, exact_tangents=True)

    return jax.jvp(sweep, primals, tangents)


# ---------------------------------------------------------------------------
# The primitive.


def _impl(cfg, matvec, residuals, linear):
    return (_tangent(cfg, matvec, residuals, linear),)


def _abstract_eval(cfg, matvec, residuals, linear):
    ys = residuals[4]
    return (jax.core.ShapedArray(ys.shape, ys.dtype),)


def _jvp(primals, tangents):
    """Second-order forward mode (the tangent of the tangent map): refused with a clear error.

    It would need the exponential of a block operator of the block operator
    (four copies of the state) for each further order; Gauss–Newton methods
    need first derivatives only.
    """
    raise NotImplementedError(
        "expm_multiply: forward mode over forward mode (jax.jacfwd of jax.jacfwd) is "
        "not supported; first derivatives are, in both modes, and forward over reverse "
        "(jax.hessian, jax.jvp of jax.grad) works for method='lanczos' and 'skew-lanczos'"
    )


def _transpose_rule(inputs, cts_out):
    cfg, matvec, residuals, linear = inputs
    (g,) = cts_out
    if any(isinstance(x, ad.UndefinedPrimal) for x in jax.tree_util.tree_leaves(residuals)):
        raise NotImplementedError(
            "expm_multiply: transposing its tangent with respect to the forward solve itself "
            "(reverse mode over forward mode of the residuals) is not supported"
        )
    bars = _transpose(cfg, matvec, residuals, g)
    linear_cts = jax.tree_util.tree_map(
        lambda x, ct: ct if isinstance(x, ad.UndefinedPrimal) else None,
        linear,
        bars,
        is_leaf=lambda x: isinstance(x, ad.UndefinedPrimal),
    )
    none = lambda tree: jax.tree_util.tree_map(lambda _: None, tree)  # noqa: E731
    return none(cfg), none(matvec), none(residuals), linear_cts


_tangent_p = eqxi.create_vprim(
    "expm_tangent",
    eqxi.filter_primitive_def(_impl),
    eqxi.filter_primitive_def(_abstract_eval),
    eqxi.filter_primitive_jvp(_jvp),
    eqxi.filter_primitive_transpose(materialise_zeros=True)(_transpose_rule),
)


def _batch_rule(axis_data, inputs, batch_axes, **params):
    """Batching: equinox's mapped rules, with every linear input batched first.

    The mapped transpose returns one cotangent per batch element for each
    linear input; an input shared across the batch (``params`` under
    ``jax.grad(jax.vmap(f, in_axes=(0, None)))``) is broadcast here, so that
    JAX's transpose of the broadcast sums those cotangents.
    """
    treedef = params["treedef"]
    positions = jax.tree_util.tree_unflatten(treedef, list(range(treedef.num_leaves)))
    num_linear = len(jax.tree_util.tree_leaves(positions[3]))
    inputs, batch_axes = list(inputs), list(batch_axes)
    if any(b is not None for b in batch_axes):
        for i in range(len(inputs) - num_linear, len(inputs)):
            if batch_axes[i] is None:
                x = inputs[i]
                inputs[i] = jnp.broadcast_to(x, (axis_data.size, *jnp.shape(x)))
                batch_axes[i] = 0
    return _mapped_batch_rule(axis_data, tuple(inputs), tuple(batch_axes), **params)


# (jax keeps the batching rules of primitives in this table; equinox registered
# its mapped rule there.)
_mapped_batch_rule = batching.fancy_primitive_batchers[_tangent_p]
batching.fancy_primitive_batchers[_tangent_p] = _batch_rule
