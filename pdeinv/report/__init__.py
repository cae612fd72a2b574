"""Run folders: resolved config, metrics.json, result.npz, fields.vtu and figures."""

from ._figures import draw_coefficient as draw_coefficient
from ._figures import draw_convergence as draw_convergence
from ._figures import draw_figures as draw_figures
from ._figures import draw_fit as draw_fit
from ._run import read_metrics as read_metrics
from ._run import read_result as read_result
from ._run import write_config as write_config
from ._run import write_metrics as write_metrics
from ._run import write_result as write_result
from ._run import write_vtu as write_vtu
