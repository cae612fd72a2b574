"""Adaptive Krylov exponential integrator ``exp(tA(params)) v`` with adjoint gradients."""

from ._affine import augment_affine as augment_affine
