"""Initial-condition (and coefficient-field) helpers, evaluated at the nodes of any space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _box(space):
    """Box ``(lower, upper)`` of a space: the grid box for grids, else the points' hull."""
    lower = getattr(space, "lower", ())
    if lower:
        return np.asarray(lower), np.asarray(space.upper)
    return space.points.min(axis=0), space.points.max(axis=0)


def _as_array(values):
    return jnp.asarray(values, dtype=jnp.zeros(()).dtype)


def gaussian_bump(space, center=None, width: float = 0.1, amplitude: float = 1.0):
    """``amplitude * exp(-|x - center|^2 / (2 width^2))`` at the nodes.

    Parameters
    ----------
    space
        Grid or mesh.
    center
        Centre, shape ``(dim,)``; default the centre of the domain's box.
    width
        Standard deviation (> 0).
    amplitude
        Peak value.

    Returns
    -------
    Array
        ``(num_nodes,)``.
    """
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    lower, upper = _box(space)
    center = 0.5 * (lower + upper) if center is None else np.asarray(center, dtype=float)
    if center.shape != (space.dim,):
        raise ValueError(f"center must have shape ({space.dim},), got {center.shape}")
    r2 = np.sum((space.points - center) ** 2, axis=1)
    return _as_array(amplitude * np.exp(-r2 / (2.0 * width**2)))


def sum_of_sines(space, modes=((1,),), amplitudes=None):
    """Sum of products of sines ``sum_k a_k prod_d sin(n_kd pi (x_d - lower_d) / L_d)``.

    Each term vanishes on the boundary of the domain's box (Dirichlet-compatible) and is
    an eigenfunction of the Laplacian there.

    Parameters
    ----------
    space
        Grid or mesh; the box is the grid box (or the bounding box of mesh points).
    modes
        Sequence of integer tuples, one wave number per axis (shorter tuples are padded
        with 1), e.g. ``((1, 1), (2, 3))``.
    amplitudes
        One amplitude per mode (default all 1).

    Returns
    -------
    Array
        ``(num_nodes,)``.
    """
    lower, upper = _box(space)
    modes = [tuple(int(k) for k in m) + (1,) * (space.dim - len(m)) for m in modes]
    if any(len(m) != space.dim for m in modes):
        raise ValueError(f"each mode must have at most {space.dim} wave numbers, got {modes}")
    amplitudes = np.ones(len(modes)) if amplitudes is None else np.asarray(amplitudes, float)
    if amplitudes.shape != (len(modes),):
        raise ValueError(f"amplitudes must have {len(modes)} entries, got {amplitudes.shape}")
    xi = (space.points - lower) / (upper - lower)
    field = np.zeros(space.num_nodes)
    for a, m in zip(amplitudes, modes, strict=True):
        field += a * np.prod(np.sin(np.pi * np.asarray(m) * xi), axis=1)
    return _as_array(field)


def smooth_random_field(
    space,
    key,
    *,
    length_scale: float = 0.2,
    amplitude: float = 1.0,
    mean: float = 0.0,
    num_features: int = 512,
):
    """Smooth random field: a sample of (approximately) a squared-exponential Gaussian process.

    Random Fourier features ``sqrt(2 / M) sum_m z_m cos(w_m . x + p_m)`` with
    ``w_m ~ N(0, I / length_scale^2)``, ``p_m ~ U(0, 2 pi)``, ``z_m ~ N(0, 1)``: the
    covariance tends to ``amplitude^2 exp(-|x - y|^2 / (2 length_scale^2))`` as
    ``M = num_features`` grows.  Works for grids and meshes alike; the same key gives the
    same field on any space.

    Parameters
    ----------
    space
        Grid or mesh.
    key
        ``jax.random`` key or an integer seed.
    length_scale, amplitude, mean
        Correlation length (> 0), standard deviation and mean of the field.
    num_features
        Number of random features ``M``.

    Returns
    -------
    Array
        ``(num_nodes,)``.
    """
    if length_scale <= 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if isinstance(key, (int, np.integer)):
        key = jax.random.PRNGKey(int(key))
    k_w, k_p, k_z = jax.random.split(key, 3)
    dtype = jnp.zeros(()).dtype
    w = jax.random.normal(k_w, (num_features, space.dim), dtype) / length_scale
    phase = jax.random.uniform(k_p, (num_features,), dtype, 0.0, 2.0 * jnp.pi)
    z = jax.random.normal(k_z, (num_features,), dtype)
    x = jnp.asarray(space.points, dtype)
    features = jnp.cos(x @ w.T + phase) * jnp.sqrt(2.0 / num_features)
    return mean + amplitude * (features @ z)
