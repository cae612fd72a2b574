"""Adaptive Krylov exponential integrator ``exp(tA(params)) v`` with adjoint gradients."""

from ._affine import augment_affine as augment_affine
from ._expm import ExpmStats as ExpmStats
from ._expm import check_tol as check_tol
from ._expm import expm_multiply as expm_multiply
from ._expm import expm_multiply_info as expm_multiply_info
from ._times import check_times as check_times
