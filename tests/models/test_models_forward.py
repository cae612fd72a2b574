"""Forward solutions of every model agree with a tight-tolerance diffrax solve.

Three independent routes to ``u(t)`` for the same semi-discrete system:
``scipy.sparse.linalg.expm_multiply`` on the exported matrix, diffrax (Dopri8, rtol
1e-12) on ``model.rhs``, and :func:`pdeinv.models.simulate` (Krylov ``expm_multiply``).
"""

from pathlib import Path

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeinv.discretize import (
    Dirichlet,
    Neumann,
    grid,
    matvec_to_sparse,
    p1_lumped_mass,
    read_mesh,
    structured_triangle_mesh,
)
from pdeinv.models import (
    advection_diffusion_fd,
    gaussian_bump,
    heat_fd,
    heat_p1,
    simulate,
    smooth_random_field,
    sum_of_sines,
    wave_fd,
)

MESHES = Path(__file__).resolve().parents[2] / "meshes"
TIMES = np.array([0.005, 0.02])


def _log_field(space, seed, mean=0.0, amplitude=0.3):
    return smooth_random_field(space, seed, length_scale=0.3, amplitude=amplitude, mean=mean)


def _heat_neumann():
    g = grid((10, 8), upper=(1.0, 0.8))
    return heat_fd(g, _log_field(g, 0), gaussian_bump(g, width=0.15)), TIMES


def _heat_affine():
    g = grid((9, 7))
    bc = {"xmin": Dirichlet(1.0), "xmax": Neumann(lambda x: x[..., 1]), "y": "dirichlet"}
    model = heat_fd(g, _log_field(g, 1), sum_of_sines(g, ((1, 1),)), bc=bc, source=2.0)
    return model, TIMES


def _wave(form):
    def build():
        g = grid((9, 9))
        model = wave_fd(g, _log_field(g, 2, mean=-1.0), gaussian_bump(g, width=0.2), form=form)
        return model, np.array([0.1, 0.3])

    return build


def _advection_diffusion():
    g = grid((10, 9))
    bc = {"x": "periodic", "ymin": Dirichlet(0.5), "ymax": "neumann"}
    model = advection_diffusion_fd(
        g, _log_field(g, 3, mean=-2.0), [1.5, -0.7], gaussian_bump(g), bc=bc, reaction=0.3
    )
    return model, np.array([0.01, 0.05])


def _advection_diffusion_field():
    g = grid((8, 8))
    velocity = np.stack([np.sin(np.pi * g.points[:, 1]), np.cos(np.pi * g.points[:, 0])], axis=1)
    model = advection_diffusion_fd(
        g, -2.0, velocity, gaussian_bump(g), bc="dirichlet", scheme="central"
    )
    return model, np.array([0.01, 0.05])


def _heat_p1():
    mesh = structured_triangle_mesh(7, 6)
    model = heat_p1(mesh, _log_field(mesh, 4), gaussian_bump(mesh), dirichlet="left", source=1.0)
    return model, TIMES


def _heat_p1_file():
    mesh = read_mesh(MESHES / "l_shape.msh")
    model = heat_p1(mesh, _log_field(mesh, 5), gaussian_bump(mesh, center=(-0.5, 0.5)))
    return model, np.array([0.002, 0.01])


CASES = {
    "heat-neumann": _heat_neumann,
    "heat-affine": _heat_affine,
    "wave-divergence": _wave("divergence"),
    "wave-nondivergence": _wave("nondivergence"),
    "advdiff-affine": _advection_diffusion,
    "advdiff-field-central": _advection_diffusion_field,
    "heat-p1-dirichlet": _heat_p1,
    "heat-p1-lshape": _heat_p1_file,
}


def scipy_solution(model, times):
    """``u(t)`` from the exported sparse matrix (augmented by ``[b; 0]`` if affine)."""
    A = matvec_to_sparse(model.matvec, model.params, model.num_states)
    v = np.asarray(model.u0)
    if model.source is not None:
        b = np.asarray(model.source(model.params)).reshape(-1, 1)
        A = sp.bmat([[A, sp.csr_matrix(b)], [None, sp.csr_matrix((1, 1))]]).tocsr()
        v = np.append(v, 1.0)
    out = np.stack([spla.expm_multiply(t * A, v) for t in times])
    return out[:, : model.num_states]


def diffrax_solution(model, times):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(model.rhs),
        diffrax.Dopri8(),
        t0=0.0,
        t1=float(times[-1]),
        dt0=None,
        y0=model.u0,
        args=model.params,
        saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100_000,
    )
    return np.asarray(solution.ys)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


SLOW_CASES = {"wave-nondivergence", "advdiff-field-central", "heat-p1-lshape"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n for n in CASES],
)
def test_forward_solution_matches_diffrax(name):
    model, times = CASES[name]()
    reference = diffrax_solution(model, times)
    if name == "heat-neumann":  # insulated: total heat is conserved in time
        np.testing.assert_allclose(reference.sum(axis=1), np.sum(model.u0), rtol=1e-10)
    assert _rel(scipy_solution(model, times), reference) < 1e-9
    states = simulate(model, model.params, jnp.asarray(times), tol=1e-10)
    assert states.shape == reference.shape
    assert _rel(np.asarray(states), reference) < 1e-6


@pytest.mark.slow
def test_p1_heat_conserves_total_heat_in_time():
    mesh = structured_triangle_mesh(5, 4)
    p1 = heat_p1(mesh, _log_field(mesh, 6), gaussian_bump(mesh))
    u = np.asarray(p1.observe(jnp.asarray(diffrax_solution(p1, TIMES))))
    mass = p1_lumped_mass(mesh)
    np.testing.assert_allclose(u @ mass, np.asarray(p1.observe(p1.u0)) @ mass, rtol=1e-10)
