"""pdeinv: recover coefficients of time-dependent PDEs with Krylov exponential integrators.

The engine is :func:`expm_multiply`, the matrix-free action ``exp(t A(params)) v``
with accurate, memory-light reverse-mode gradients.  Subpackages:

- :mod:`pdeinv.krylov` -- Arnoldi/Lanczos decompositions with adjoints, small-matrix exponentials;
- :mod:`pdeinv.expm` -- the adaptive integrator and its gradient rules;
- :mod:`pdeinv.discretize` -- finite-difference grids, P1 finite elements, meshes;
- :mod:`pdeinv.models` -- heat, wave, advection-diffusion models and :func:`simulate`;
- :mod:`pdeinv.inverse` -- parameterisations, observations, regularisers, optimisers;
- :mod:`pdeinv.reference` -- diffrax solves of the same models;
- :mod:`pdeinv.report` -- run folders, VTU and figures.

The library never changes global JAX settings; enable float64 yourself with
``jax.config.update("jax_enable_x64", True)`` (the CLI and the tests do).
"""

from . import discretize as discretize
from . import expm as expm
from . import inverse as inverse
from . import krylov as krylov
from . import models as models
from . import reference as reference
from . import report as report
from ._threads import limit_blas_threads as limit_blas_threads
from .expm import ExpmStats as ExpmStats
from .expm import augment_affine as augment_affine
from .expm import expm_multiply as expm_multiply
from .expm import expm_multiply_info as expm_multiply_info
from .models import Model as Model
from .models import simulate as simulate

__version__ = "0.1.0"
