"""Semi-discrete PDE models: heat, wave (first-order form), advection-diffusion."""

from ._advection_diffusion import advection_diffusion_fd as advection_diffusion_fd
from ._heat import heat_fd as heat_fd
from ._heat import heat_p1 as heat_p1
from ._initial import gaussian_bump as gaussian_bump
from ._initial import smooth_random_field as smooth_random_field
from ._initial import sum_of_sines as sum_of_sines
from ._model import KrylovForm as KrylovForm
from ._model import Model as Model
from ._model import TimedSource as TimedSource
from ._simulate import simulate as simulate
from ._simulate import simulate_info as simulate_info
from ._sources import PointSource as PointSource
from ._sources import VolumeSource as VolumeSource
from ._sources import simulate_sources as simulate_sources
from ._wave import wave_fd as wave_fd
