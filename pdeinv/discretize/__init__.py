"""Spatial discretisations: structured-grid finite differences and P1 finite elements."""

from ._space import Space as Space
