"""Pieces shared by the Arnoldi and Lanczos iterations: breakdown test, safe
norms, input validation."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._batching import per_element

# A new Krylov direction whose norm is below this multiple of
# eps * max_j ||A q_j|| is rounding noise: the space is invariant (happy
# breakdown). A genuine residual that small would change f(A)v only at the level
# of rounding errors anyway.
BREAKDOWN_FACTOR = 100.0


def safe_norm(w: Array) -> Array:
    """Euclidean norm whose derivative at w = 0 is 0 rather than NaN."""
    sq = jnp.dot(w, w)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, jnp.ones_like(sq))), 0.0).astype(
        w.dtype
    )


def safe_normalize(w: Array, norm: Array, is_zero: Array) -> Array:
    """w / norm, or exactly 0 where ``is_zero`` (no 0/0 in values or gradients)."""
    denom = jnp.where(is_zero, jnp.ones_like(norm), norm)
    return jnp.where(is_zero, jnp.zeros_like(w), w / denom)


def breakdown_tolerance(scale: Array, dtype) -> Array:
    return (BREAKDOWN_FACTOR * jnp.finfo(dtype).eps) * scale


def check_krylov_dim(krylov_dim: Any, n: int, where: str) -> int:
    try:
        k = operator.index(krylov_dim)
    except TypeError:
        raise TypeError(
            f"{where}: `krylov_dim` must be an int, got {type(krylov_dim).__name__}."
        ) from None
    if not 1 <= k <= n:
        raise ValueError(f"{where}: `krylov_dim` must satisfy 1 <= krylov_dim <= n = {n}, got {k}.")
    return k


def check_vector(v: Any, where: str) -> Array:
    v = jnp.asarray(v)
    if v.ndim != 1:
        raise ValueError(f"{where}: `v` must be 1-D of shape (n,), got shape {v.shape}.")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"{where}: `v` must have a real floating dtype, got {v.dtype}.")
    if v.shape[0] == 0:
        raise ValueError(f"{where}: `v` must not be empty.")
    return v


def check_finite(v: Array, where: str) -> Array:
    """ValueError for concrete non-finite v; a runtime error under jit."""
    message = f"{where}: `v` contains non-finite values (NaN or inf)."
    if not isinstance(v, jax.core.Tracer):
        if not np.all(np.isfinite(np.asarray(v))):
            raise ValueError(message)
        return v
    return eqx.error_if(v, ~jnp.all(jnp.isfinite(v)), message)


def check_matvec(matvec: Callable, v: Array, params: Any, where: str) -> None:
    if not callable(matvec):
        raise TypeError(f"{where}: `matvec` must be callable as matvec(v, params).")
    out = jax.eval_shape(matvec, v, params)
    shape = getattr(out, "shape", None)
    if shape != v.shape:
        raise ValueError(
            f"{where}: `matvec(v, params)` must return an array of shape {v.shape} like `v`, "
            f"got {shape if shape is not None else type(out).__name__}."
        )
    if out.dtype != v.dtype:
        raise TypeError(
            f"{where}: `matvec(v, params)` must return dtype {v.dtype} like `v`, got {out.dtype}."
        )


def prepare(matvec: Callable, v: Any, params: Any, krylov_dim: Any, where: str):
    """Validate the public arguments; hoist arrays closed over by ``matvec``.

    Returns ``(matvec_all, v, params_all, k)`` with ``matvec_all(v, params_all)``
    a closure-free function, so a ``custom_vjp`` can return cotangents for
    arrays that ``matvec`` captured (``jax.closure_convert``).
    """
    v = check_vector(v, where)
    k = check_krylov_dim(krylov_dim, v.shape[0], where)
    check_matvec(matvec, v, params, where)
    v = check_finite(v, where)
    converted, consts = jax.closure_convert(matvec, v, params)
    consts = tuple(consts)

    def matvec_all(x, params_all):
        p, c = params_all
        return converted(x, p, *c)

    return matvec_all, v, (params, consts), k


def transpose_matvec(matvec: Callable, params: Any, like: Array) -> Callable[[Array], Array]:
    """``y -> A(params)^T y`` from the VJP of the linear map ``x -> matvec(x, params)``."""
    _, vjp = jax.vjp(lambda x: matvec(x, params), jnp.zeros_like(like))
    return lambda y: vjp(y)[0]


class _FloatLeafVJP:
    """Cotangents of the inexact leaves of ``params`` for batches of ``matvec`` pairs.

    Integer leaves get float0 zeros (as ``jax.vjp`` would give) and stay out of
    the sums, where float0 cannot add.
    """

    def __init__(self, matvec: Callable, params: Any):
        self.matvec = matvec
        self.leaves, self.treedef = jax.tree.flatten(params)
        self.inexact = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in self.leaves]
        self.float_leaves = [x for x, f in zip(self.leaves, self.inexact, strict=True) if f]

    def zero(self):
        return [jnp.zeros_like(leaf) for leaf in self.float_leaves]

    def __call__(self, rows, lams):
        """``sum_j d<lams_j, A rows_j>/d(float leaves)`` as a list."""

        def batched(float_leaves):
            it = iter(float_leaves)
            leaves = [next(it) if f else x for x, f in zip(self.leaves, self.inexact, strict=True)]
            params = jax.tree.unflatten(self.treedef, leaves)
            return jax.vmap(self.matvec, in_axes=(0, None))(rows, params)

        _, vjp = jax.vjp(batched, self.float_leaves)
        return vjp(lams)[0]

    def single(self, row, lam):
        """``d<lam, A row>/d(float leaves)`` for one pair, without a batch axis."""

        def one(float_leaves):
            it = iter(float_leaves)
            leaves = [next(it) if f else x for x, f in zip(self.leaves, self.inexact, strict=True)]
            return self.matvec(row, jax.tree.unflatten(self.treedef, leaves))

        _, vjp = jax.vjp(one, self.float_leaves)
        return vjp(lam)[0]

    def tree(self, float_bars):
        it = iter(float_bars)
        bars = [
            next(it) if f else np.zeros(np.shape(x), dtype=jax.dtypes.float0)
            for x, f in zip(self.leaves, self.inexact, strict=True)
        ]
        return jax.tree.unflatten(self.treedef, bars)


def _add_lists(total, more):
    return [a + b for a, b in zip(total, more, strict=True)]


def params_cotangent(matvec: Callable, params: Any, basis_rows: Array, lam_rows: Array):
    """sum_j d/dparams <lam_j, A(params) q_j>, one VJP of matvec per row.

    A ``lax.scan`` over the rows of the ``(k, n)`` blocks, one vector at a time
    (see ``_COUNT_CHUNK``): one VJP over all k vectors at once would hold k
    copies of every intermediate of matvec, which for k = 80 outweighs the basis
    itself, and batched VJPs cost more per vector on XLA:CPU.  The rows are read
    straight from the blocks (reshaped to ``(k, 1, n)`` they were copied into a
    new layout before the loop: two ``(k, n)`` copies per call, ~5 ms on the
    128^2 wave, k = 60).
    """
    vjp = _FloatLeafVJP(matvec, params)

    def accumulate(total, xs):
        # Materialise this row first: fed straight from the scan's dynamic
        # slice, XLA:CPU fuses the slicing into the matvec's stencil loops,
        # which then run unvectorised (128^2 wave, 60 rows: 40 ms against
        # 10 ms, one core).
        xs = jax.lax.optimization_barrier(xs)
        return _add_lists(total, vjp.single(*xs)), None

    float_bars, _ = jax.lax.scan(accumulate, vjp.zero(), (basis_rows, lam_rows))
    return vjp.tree(float_bars)


def params_cotangent_low_rank(
    matvec: Callable,
    params: Any,
    left: Array,
    basis: Array,
    right: Array,
    basis_adjoint: Array,
    count: Any,
    block: int = 1,
):
    """``sum_{r < count} d<right_r @ basis_adjoint, A(params) (left_r @ basis)>/dparams``.

    ``left`` and ``right`` are ``(m, k)`` coefficient rows over the ``(k, n)``
    bases; ``count`` (a traced int) says how many leading pairs contribute.  A
    ``while_loop`` over blocks of ``block`` pairs forms each block's vectors
    (two ``(block, k) @ (k, n)`` products) only when it is needed and stops
    after the block holding the last pair; inside a block the VJPs run one
    pair at a time (``_COUNT_CHUNK``) up to ``count``.  So the VJPs are
    proportional to ``count``, and the products to ``count`` rounded up to
    ``block``.  ``block = 1`` reads both bases once per pair (a matrix-vector
    product each): cheapest for the few pairs of a diffusive step; with tens
    of pairs (oscillatory steps) a block of several rows reads them once per
    block (measured on the 128^2 wave below).
    """
    vjp = _FloatLeafVJP(matvec, params)
    m = left.shape[0]
    chunk = min(m, _COUNT_CHUNK if block == 1 else block)
    pad = ((0, -(-m // chunk) * chunk - m), (0, 0))
    left, right = jnp.pad(left, pad), jnp.pad(right, pad)
    index = jnp.arange(chunk)

    def body(state):
        i, total = state
        start = i * chunk
        rows = jax.lax.dynamic_slice_in_dim(left, start, chunk) @ basis
        weights = jax.lax.dynamic_slice_in_dim(right, start, chunk)
        weights = jnp.where((start + index < count)[:, None], weights, 0)
        lams = weights @ basis_adjoint
        if block == 1:
            return i + 1, _add_lists(total, vjp(rows, lams))

        def one(state):
            r, total = state
            # Materialised, as in params_cotangent.
            row, lam = jax.lax.optimization_barrier((rows[r], lams[r]))
            return r + 1, _add_lists(total, vjp.single(row, lam))

        _, total = jax.lax.while_loop(
            lambda st: (st[0] < chunk) & (start + st[0] < count), one, (0, total)
        )
        return i + 1, total

    init = (jnp.zeros((), jnp.int32), vjp.zero())
    _, float_bars = jax.lax.while_loop(lambda st: st[0] * chunk < count, body, init)
    return vjp.tree(float_bars)


# Vectors per VJP of matvec in the low-rank cotangent sums (params_cotangent
# takes one row at a time too): one at a time.  A VJP of a
# stencil matvec batched over several vectors costs more per vector than single
# ones on XLA:CPU (its batch reductions): measured with k = 30 pairs on the
# 128^2 wave's velocity-stress operator, 6.4 ms one at a time against 24-26 ms
# in chunks of 5-15 and 43 ms all at once; even at 32^2 and 64^2; on 128^2
# heat, 1 pair 53 us, 2 pairs 200 us, 4 pairs 257 us.
_COUNT_CHUNK = 1


def one_at_a_time_on_cpu(fn: Callable) -> Callable:
    """``fn`` whose ``vmap`` runs the batch one element at a time on CPU.

    For the small LAPACK calls of the solvers (``solve``, ``eigh``, ``svd``).
    jaxlib's CPU LAPACK kernels split a batch of 64 or more matrices over XLA's
    intra-op thread pool and block the calling thread until those tasks finish.
    Inside a ``while_loop`` the calling thread is itself one of the pool's
    workers, so once every worker waits on such a batch no one is left to run
    the tasks: the program deadlocks at 0 % CPU (measured with jaxlib 0.10.2 on
    2 cores: ``vmap`` of ``expm_multiply`` over 64 or more start vectors never
    returned; gdb shows the workers in ``jax::ParallelBatchMap`` of ``dgetrf``).
    Under ``vmap`` this wrapper lowers to a ``lax.map`` over unbatched calls on
    CPU (no pool tasks; the batched kernel would also loop over the matrices
    one by one) and to the batched call on every other platform
    (:func:`~pdeinv.krylov._batching.per_element` with ``"auto"``, which also
    keeps forward mode, as in Hessian-vector products of the integrator).
    """
    return per_element(fn, "auto")


def check_finite_params(params: Any, where: str) -> Any:
    """ValueError naming the leaf for concrete non-finite ``params``; a runtime error under jit.

    Checked before any solve: a NaN coefficient would otherwise surface only as
    a failed step-size search deep inside the solver.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    checked = []
    for path, leaf in leaves:
        name = "params" + jax.tree_util.keystr(path)
        if isinstance(leaf, jax.core.Tracer):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                leaf = eqx.error_if(
                    leaf,
                    ~jnp.all(jnp.isfinite(leaf)),
                    f"{where}: `{name}` contains non-finite values (NaN or inf).",
                )
        elif isinstance(leaf, (jax.Array, np.ndarray, float, complex, np.inexact)):
            values = np.asarray(leaf)
            if jnp.issubdtype(values.dtype, jnp.inexact):
                bad = ~np.isfinite(values)
                if bad.any():
                    first = np.unravel_index(int(np.argmax(bad)), values.shape)
                    at = f" (first at index {tuple(int(i) for i in first)})" if first else ""
                    raise ValueError(
                        f"{where}: `{name}` contains {int(bad.sum())} non-finite value(s) "
                        f"(NaN or inf){at}."
                    )
        checked.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, checked)


_eigh_lapack = one_at_a_time_on_cpu(lambda h: tuple(jnp.linalg.eigh(h)))


@jax.custom_jvp
def eigh_small(h: Array) -> tuple[Array, Array]:
    """``(eigenvalues, eigenvectors)`` of a small symmetric matrix, safe to differentiate.

    The solvers only ever differentiate *spectral functions* ``f(H) = Q f(L) Q^T``
    of these (matrix exponentials, their integrals), never an eigenvector on its
    own.  jax's rule for ``eigh`` divides by every eigenvalue gap, which is 0/0
    for the repeated eigenvalues that every zero-padded projection has after a
    breakdown of the Krylov process (and inf for near copies), so forward mode
    through a solve (``jax.jvp`` of ``jax.grad``) gave NaN.  This rule drops the
    coupling between eigenvectors whose eigenvalues agree to ``k eps max|L|``:
    rotations inside an eigenspace leave every ``f(H)`` unchanged, and the
    padded block of a broken-down projection has a zero tangent, so for those
    the derivative of ``f(H)`` is exact.  Batched one matrix at a time on CPU
    (:func:`one_at_a_time_on_cpu`).
    """
    return _eigh_lapack(h)


@eigh_small.defjvp
def _eigh_small_jvp(primals, tangents):
    (h,), (dh,) = primals, tangents
    lam, q = eigh_small(h)
    dh = 0.5 * (dh + jnp.swapaxes(dh, -1, -2))
    rotated = jnp.swapaxes(q, -1, -2) @ dh @ q
    gap = lam[..., None, :] - lam[..., :, None]  # gap[i, j] = lam_j - lam_i
    k = lam.shape[-1]
    floor = k * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam), axis=-1, keepdims=True)
    separated = jnp.abs(gap) > floor[..., None]
    inverse_gap = jnp.where(separated, 1.0 / jnp.where(separated, gap, 1.0), 0.0)
    dlam = jnp.diagonal(rotated, axis1=-2, axis2=-1)
    dq = q @ (inverse_gap * rotated)
    return (lam, q), (dlam, dq)
