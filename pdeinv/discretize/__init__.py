"""Spatial discretisations: structured-grid finite differences and P1 finite elements."""

from ._fem import ElementGeometry as ElementGeometry
from ._fem import dirichlet_nodes as dirichlet_nodes
from ._fem import element_geometry as element_geometry
from ._fem import free_nodes as free_nodes
from ._fem import p1_load_vector as p1_load_vector
from ._fem import p1_lumped_mass as p1_lumped_mass
from ._fem import p1_mass_matrix as p1_mass_matrix
from ._fem import p1_stiffness_matrix as p1_stiffness_matrix
from ._fem import p1_stiffness_matvec as p1_stiffness_matvec
from ._fem import p1_stiffness_norm_bound as p1_stiffness_norm_bound
from ._mesh import boundary_facets as boundary_facets
from ._mesh import read_mesh as read_mesh
from ._mesh import space_to_meshio as space_to_meshio
from ._mesh import structured_tetra_mesh as structured_tetra_mesh
from ._mesh import structured_triangle_mesh as structured_triangle_mesh
from ._mesh import write_mesh as write_mesh
from ._space import Space as Space
