"""Krylov decompositions (Arnoldi, Lanczos) with reverse-mode adjoints, and the
small dense matrix functions their projections need (see docs/interfaces.md)."""

from ._arnoldi import ArnoldiDecomposition as ArnoldiDecomposition
from ._dense import expm_small as expm_small
from ._dense import expm_sym_tridiag_e1 as expm_sym_tridiag_e1
from ._lanczos import LanczosDecomposition as LanczosDecomposition
