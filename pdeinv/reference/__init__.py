"""Reference ODE solves of pdeinv models with diffrax (cross-check and comparison).

See ``docs/interfaces.md``: :func:`solve` is the differentiable reference solve,
returning a :class:`ReferenceSolution` (states, result code, step statistics);
:func:`compare` measures pdeinv against diffrax on one problem
(``python -m pdeinv compare``).
"""

from ._compare import CompareProblem as CompareProblem
from ._compare import ExternalSolver as ExternalSolver
from ._compare import SolverConfig as SolverConfig
from ._compare import compare as compare
from ._compare import solver_configs as solver_configs
from ._compare import to_markdown as to_markdown
from ._compare import write_outputs as write_outputs
from ._solve import ADJOINTS as ADJOINTS
from ._solve import SOLVERS as SOLVERS
from ._solve import STABILITY_CONSTANTS as STABILITY_CONSTANTS
from ._solve import ReferenceSolution as ReferenceSolution
from ._solve import ReferenceSolveError as ReferenceSolveError
from ._solve import count_matvecs as count_matvecs
from ._solve import describe_result as describe_result
from ._solve import num_rhs_evaluations as num_rhs_evaluations
from ._solve import solve as solve
from ._solve import stability_step as stability_step
