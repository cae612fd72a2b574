"""Semi-discrete PDE models: heat, wave (first-order form), advection-diffusion."""

from ._model import Model as Model
from ._simulate import simulate as simulate
