"""Krylov decompositions (Arnoldi, Lanczos) with reverse-mode adjoints, Krylov
approximations of f(A) v, and the small dense matrix functions their
projections need (see docs/interfaces.md)."""

from ._arnoldi import arnoldi as arnoldi
from ._dense import expm_small as expm_small
from ._dense import expm_sym_tridiag_e1 as expm_sym_tridiag_e1
from ._engine import KrylovDecomposition as KrylovDecomposition
from ._funm import expm_krylov as expm_krylov
from ._funm import funm_krylov as funm_krylov
from ._lanczos import lanczos as lanczos
