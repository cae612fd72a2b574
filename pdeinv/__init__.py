"""pdeinv: recover coefficients of time-dependent PDEs with Krylov exponential integrators.

The engine is :func:`expm_multiply`, the matrix-free action ``exp(t A(params)) v``
with accurate, memory-light reverse-mode gradients.
"""

__version__ = "0.1.0"
