"""Placing experiments on devices with ``jax.sharding`` (a 1-D device mesh).

Experiments are independent forward solves that share the parameters, so they
are split across the devices of a :class:`jax.sharding.Mesh` along one axis
(``"experiments"``) and each device runs its own batched (``vmap``) solves
inside :func:`jax.shard_map`; only the scalar misfit is summed across devices
(``psum``).  The adaptive step control of every device stays local: no device
waits for another's step count until the final sum.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

EXPERIMENT_AXIS = "experiments"


@dataclasses.dataclass(frozen=True, eq=False)
class ExperimentSharding:
    """A 1-D device mesh over which experiments are split.

    Use :func:`experiment_sharding` to build one.

    Attributes
    ----------
    mesh
        Mesh with the single axis :data:`EXPERIMENT_AXIS`.
    """

    mesh: Mesh

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def devices(self) -> list:
        return list(self.mesh.devices.flat)

    def padded_count(self, num_experiments: int) -> int:
        """Experiments rounded up to a multiple of the device count (equal shards)."""
        return int(math.ceil(num_experiments / self.num_devices) * self.num_devices)

    def split(self, num_experiments: int) -> list[int]:
        """Real (unpadded) experiments held by each device, in device order."""
        per_device = self.padded_count(num_experiments) // self.num_devices
        return [
            int(max(0, min(per_device, num_experiments - i * per_device)))
            for i in range(self.num_devices)
        ]

    def batch_sharding(self) -> NamedSharding:
        """Sharding of arrays whose leading axis is the experiment axis."""
        return NamedSharding(self.mesh, PartitionSpec(EXPERIMENT_AXIS))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def describe(self, num_experiments: int) -> dict:
        """Device layout for reports (``metrics.json``)."""
        devices = self.devices
        return {
            "count": self.num_devices,
            "platform": devices[0].platform,
            "device_kind": getattr(devices[0], "device_kind", ""),
            "mesh_shape": {name: int(size) for name, size in self.mesh.shape.items()},
            "num_experiments": int(num_experiments),
            "padded_experiments": self.padded_count(num_experiments),
            "experiments_per_device": self.split(num_experiments),
            "sharded": "experiments (jax.shard_map over a 1-D Mesh)",
        }


def experiment_sharding(devices=None) -> ExperimentSharding:
    """A 1-D mesh of ``devices`` for splitting experiments.

    Parameters
    ----------
    devices
        ``None`` (all of :func:`jax.devices`), a count ``N`` (the first ``N`` of
        :func:`jax.devices`), or a sequence of devices.

    Raises
    ------
    ValueError
        A count below 1 or above the number of available devices.
    """
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available "
                f"{available[0].platform} device(s), got {devices}"
            )
        chosen = available[: int(devices)]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must not be an empty sequence")
    return ExperimentSharding(Mesh(np.asarray(chosen), (EXPERIMENT_AXIS,)))
