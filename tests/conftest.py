"""Test configuration: float64 everywhere (the library itself never flips JAX flags)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
