"""Small helpers shared by the model builders."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def nodal_field(value, space, name: str):
    """``value`` as a flat nodal array ``(num_nodes,)`` of JAX's default float dtype.

    Accepts a scalar (broadcast), an array with ``num_nodes`` entries (any shape, e.g.
    the grid shape), or a callable ``value(points) -> (num_nodes,)``.
    """
    if callable(value):
        value = value(space.points)
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.zeros(()).dtype)
    if value.ndim == 0:
        return jnp.full((space.num_nodes,), value)
    if value.size != space.num_nodes:
        raise ValueError(
            f"{name} must be a scalar, a callable of the points, or have {space.num_nodes} "
            f"nodal values, got shape {tuple(value.shape)}"
        )
    return value.reshape(-1)


def velocity_param(velocity, space, name: str = "velocity"):
    """Velocity as ``(dim,)`` (constant) or ``(num_nodes, dim)`` (nodal field)."""
    if callable(velocity):
        velocity = velocity(space.points)
    velocity = jnp.asarray(velocity)
    if not jnp.issubdtype(velocity.dtype, jnp.floating):
        velocity = velocity.astype(jnp.zeros(()).dtype)
    if velocity.shape not in ((space.dim,), (space.num_nodes, space.dim)):
        raise ValueError(
            f"{name} must have shape ({space.dim},) or ({space.num_nodes}, {space.dim}), "
            f"got {tuple(velocity.shape)}"
        )
    return velocity


def optional_forcing(source, space):
    """Time-independent forcing ``f`` as a nodal array, or ``None`` when absent/zero."""
    if source is None:
        return None
    f = nodal_field(source, space, "source")
    if not np.any(np.asarray(f)):
        return None
    return f


def positive_field(value, space, name: str) -> np.ndarray:
    """``value`` as a flat float64 NumPy nodal array that is finite and ``> 0`` everywhere."""
    field = np.asarray(nodal_field(value, space, name), dtype=float)
    if not np.all(np.isfinite(field)) or np.any(field <= 0):
        raise ValueError(f"{name} must be finite and > 0 at every node")
    return field
