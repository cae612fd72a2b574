"""Export matrix-free operators as ``scipy.sparse`` matrices (for users and tests).

Two routes, which the tests check against each other:

* :func:`matvec_to_sparse` applies the operator to unit vectors in batches (``vmap``)
  and keeps the non-zeros: any linear ``matvec``, ``O(n^2)`` work, small ``n`` only;
* :func:`stencil_to_sparse` knows that the finite-difference operators of this package
  couple a point only to its ``2 dim`` axis neighbours, so ``3^dim`` probing vectors
  (a colouring of the grid) recover every entry: ``O(n)`` work, fine at 1024^2.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from ._grid import as_grid, boundary_conditions


def matvec_to_sparse(matvec, params, num_states: int, *, batch_size: int = 256, dtype=None):
    """Assemble ``A(params)`` from ``matvec`` by applying it to unit vectors.

    Parameters
    ----------
    matvec
        ``matvec(v, params) -> A v``, linear in ``v`` of shape ``(num_states,)``.
    params
        Parameter pytree.
    num_states
        Size ``n`` of the state.
    batch_size
        Number of unit vectors per vectorised call.
    dtype
        Dtype of the probing vectors (default: JAX's default float).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n, n)`` matrix with exact zeros dropped.
    """
    if num_states < 1 or batch_size < 1:
        raise ValueError(f"num_states and batch_size must be >= 1, got {num_states}, {batch_size}")
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    apply_batch = jax.jit(jax.vmap(lambda v: matvec(v, params)))
    rows, cols, vals = [], [], []
    for start in range(0, num_states, batch_size):
        idx = np.arange(start, min(start + batch_size, num_states))
        basis = jnp.zeros((len(idx), num_states), dtype).at[np.arange(len(idx)), idx].set(1)
        columns = np.asarray(apply_batch(basis))  # (batch, n): column j of A per row
        k, i = np.nonzero(columns)
        rows.append(i)
        cols.append(idx[k])
        vals.append(columns[k, i])
    A = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(num_states, num_states),
    )
    return A.tocsr()


def _colours_per_axis(n: int, periodic: bool) -> int:
    # Points i-1, i, i+1 (wrapped on periodic axes) must get distinct colours i mod c.
    if not periodic:
        return min(n, 3)
    if n <= 3:
        return n
    c = 3
    while n % c in (1, 2):
        c += 1
    return c


def stencil_to_sparse(space, matvec, params, *, bc="neumann"):
    """Assemble a finite-difference operator of this package with ``3^dim`` matvecs.

    Valid for operators that couple each point only to itself and its axis
    neighbours (all stencils in :mod:`pdeinv.discretize`: diffusion, advection,
    reaction and their sums), on the grid and boundary conditions they were built with.

    Parameters
    ----------
    space
        The :class:`~pdeinv.discretize.Grid`.
    matvec
        ``matvec(u, params)`` acting on flat nodal vectors.
    params
        Parameters passed to ``matvec``.
    bc
        The boundary conditions of the operator (only which axes are periodic matters).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(num_nodes, num_nodes)`` matrix (explicit zeros of the stencil are kept out).
    """
    g = as_grid(space)
    bcs = boundary_conditions(g, bc)
    shape = tuple(g.shape)
    dim, n = g.dim, g.num_nodes
    periodic = [bcs.periodic(d) for d in range(dim)]
    ncol = [_colours_per_axis(shape[d], periodic[d]) for d in range(dim)]
    index = np.indices(shape).reshape(dim, -1)  # grid index of each flat point

    colour_ids = list(itertools.product(*[range(c) for c in ncol]))
    point_colour = np.ravel_multi_index(tuple(index[d] % ncol[d] for d in range(dim)), ncol)
    dtype = jnp.zeros(()).dtype
    probes = jnp.asarray(
        (point_colour[None, :] == np.arange(len(colour_ids))[:, None]).astype(dtype)
    )
    responses = np.asarray(jax.jit(jax.vmap(lambda v: matvec(v, params)))(probes))

    rows, cols = [np.arange(n)], [np.arange(n)]
    for d in range(dim):
        for step in (-1, 1):
            j = index.copy()
            j[d] += step
            if periodic[d]:
                j[d] %= shape[d]
                ok = np.ones(n, bool)
            else:
                ok = (j[d] >= 0) & (j[d] < shape[d])
            rows.append(np.arange(n)[ok])
            cols.append(np.ravel_multi_index(tuple(j[:, ok]), shape))
    # Periodic axes with 2 points reach the same neighbour twice: keep each entry once.
    keys = np.unique(np.concatenate(rows).astype(np.int64) * n + np.concatenate(cols))
    i, j = keys // n, keys % n
    values = responses[point_colour[j], i]
    keep = values != 0
    return sp.csr_matrix((values[keep], (i[keep], j[keep])), shape=(n, n))
