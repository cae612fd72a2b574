"""Several experiments and several devices in a run: the config's ``experiments`` section
and the ``--devices`` option, turned into initial fields, a device mesh and report entries.
"""

from __future__ import annotations

import jax
import numpy as np

from ._config import ConfigError
from ._sections import ExperimentsSection


def initial_condition_fields(
    section: ExperimentsSection, model_initial: str, seed: int, space, field
) -> list[np.ndarray]:
    """Nodal initial condition of every experiment (the first is the model's ``u0``).

    ``section`` is ``experiments``, ``model_initial`` the ``model.initial_condition``
    it defaults to; ``field(key, expression, points, positive=False)`` evaluates one
    expression (the CLI's :class:`~pdeinv.cli._experiment.FieldMaker`, passed in to
    keep one implementation).
    """
    from ..models import smooth_random_field

    expressions = section.initial_conditions
    if expressions is None:
        expressions = () if section.random else (model_initial,)
    fields = [
        field(f"experiments.initial_conditions[{i}]", text, space.points, positive=False)
        for i, text in enumerate(expressions)
    ]
    for e in range(section.random):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), e)
        values = smooth_random_field(space, key, length_scale=section.length_scale)
        fields.append(np.asarray(values, dtype=float))
    return fields


def device_mesh(devices, num_experiments: int):
    """``(sharding or None, layout dict)`` for ``--devices`` (``None`` = all devices).

    Experiments are split over the devices when there are several of both; a
    single device (or a single experiment) runs unsharded.
    """
    from ..inverse._sharding import experiment_sharding

    try:
        sharding = experiment_sharding(devices)
    except ValueError as err:
        raise ConfigError(f"--devices: {err}") from None
    available = len(jax.devices())
    if sharding.num_devices > 1 and num_experiments > 1:
        return sharding, {**sharding.describe(num_experiments), "available": available}
    device = sharding.devices[0]
    layout = {
        "count": 1,
        "platform": device.platform,
        "device_kind": getattr(device, "device_kind", ""),
        "mesh_shape": None,
        "num_experiments": num_experiments,
        "padded_experiments": num_experiments,
        "experiments_per_device": [num_experiments],
        "sharded": "none (one device)" if num_experiments > 1 else "none (one experiment)",
        "available": available,
    }
    return None, layout


def split_experiment_arrays(arrays: dict) -> dict:
    """Run-folder arrays: with several experiments, the usual keys (which the figures
    read) hold the first experiment and ``experiments_<key>`` holds all of them."""
    observations = arrays.get("observations")
    if observations is None or np.ndim(observations) != 3:
        return arrays
    arrays = dict(arrays)
    for key in ("observations", "clean_observations", "predictions"):
        if arrays.get(key) is not None:
            arrays[f"experiments_{key}"] = np.asarray(arrays[key])
            arrays[key] = np.asarray(arrays[key])[0]
    return arrays
