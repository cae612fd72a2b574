"""Experiments sharded over several (forced host) devices equal the single-device results.

The child process sets ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
before importing JAX (the flag is read once, at backend start-up).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# One child process with four forced host devices (about 40 s on 2 cores): sharding
# stays covered in the default suite by the two-device CLI run of
# tests/scale/test_cli_scale.py; the exact sharded-equals-single checks run with -m slow.
pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from pdeinv import inverse, models
    from pdeinv.discretize import grid
    from pdeinv.inverse._experiments import MultiExperimentProblem
    from pdeinv.inverse._sharding import experiment_sharding

    space = grid((8, 8))
    model = models.heat_fd(space, 0.0, 0.0)
    num = 6  # not a multiple of 4: one device holds padding only
    initial = jnp.stack([models.smooth_random_field(space, e) for e in range(num)])
    nodal = inverse.NodalField(space.num_nodes)
    params = inverse.ParameterMap(nodal, "log_kappa", dict(model.params))
    times = np.array([0.01, 0.03])
    data = np.random.default_rng(0).standard_normal((num, 2, space.num_nodes))
    common = dict(
        model=model, times=times, parameters=params, observation=inverse.FullField(space),
        initial_states=initial, data=data, sigma=0.1,
        regularizer=inverse.make_regularizer("h1", space), weight=0.1, solver={"tol": 1e-10},
    )
    x = jnp.asarray(0.3 * np.sin(3 * space.points[:, 0]))
    out = {"devices": len(jax.devices())}
    single = MultiExperimentProblem(**common)
    (v1, _), g1 = jax.value_and_grad(single.objective, has_aux=True)(x)
    s1 = single.states(x)
    for count in (4, 2):
        sharded = MultiExperimentProblem(**common, sharding=experiment_sharding(count))
        (v, _), g = jax.jit(jax.value_and_grad(sharded.objective, has_aux=True))(x)
        s = sharded.states(x)
        out[count] = {
            "value": abs(float(v - v1)) / abs(float(v1)),
            "grad": float(jnp.linalg.norm(g - g1) / jnp.linalg.norm(g1)),
            "states": float(jnp.linalg.norm(s - s1) / jnp.linalg.norm(s1)),
            "shape": list(s.shape),
            "layout": sharded.device_layout(),
        }
    try:
        experiment_sharding(5)
    except ValueError as err:
        out["too_many"] = str(err)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def child_result():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_four_host_devices_seen(child_result):
    assert child_result["devices"] == 4


@pytest.mark.parametrize("count", ["4", "2"])
def test_sharded_equals_single_device(child_result, count):
    result = child_result[count]
    assert result["value"] <= 1e-13
    assert result["grad"] <= 1e-13
    assert result["states"] <= 1e-13
    assert result["shape"] == [6, 2, 64]


def test_layout_reports_the_split(child_result):
    four, two = child_result["4"]["layout"], child_result["2"]["layout"]
    assert four["count"] == 4 and four["platform"] == "cpu"
    assert four["mesh_shape"] == {"experiments": 4}
    assert four["padded_experiments"] == 8 and four["experiments_per_device"] == [2, 2, 2, 0]
    assert two["mesh_shape"] == {"experiments": 2} and two["experiments_per_device"] == [3, 3]
    assert "between 1 and the 4 available" in child_result["too_many"]
