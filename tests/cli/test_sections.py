"""The typed config sections: every schema key has a field, sections are immutable, and
the resolved dict survives the trip through them unchanged (issue 18)."""

import dataclasses
import types
from pathlib import Path

import pytest

from pdeinv.cli._config import dump_config, iter_options, load_config, resolve_config
from pdeinv.cli._sections import RunConfig, SourceSpec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

# Values of every shape the schema allows: per-side boundary data, sources of both
# kinds, explicit sensor points, expression lists, nullable lists set.
RICH = {
    "name": "rich",
    "model": {
        "boundary": {"left": {"dirichlet": 2.0}, "right": "dirichlet", "default": "neumann"},
        "capacity": "1 + x",
    },
    "sources": [
        {"location": [0.5, 0.5], "rate": -1.0, "stop": 0.02},
        {"field": "exp(-x)", "rate": 2.0, "start": 0.01},
    ],
    "observations": {"kind": "sensors", "sensors": {"points": [[0.2, 0.3], [0.7, 0.8]]}},
    "experiments": {"initial_conditions": ["bumps", "x * y"], "batch_size": 2},
    "regularization": {"choose_weight": "evidence", "evidence_weights": [1e-2, 1e-3]},
    "optimizer": {"trust_radius": 0.5},
}


def _leaf_fields(section, prefix=""):
    """Dotted names of the leaves of a section (nested sections recursed into)."""
    out = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            out += _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_every_schema_key_is_a_section_field_and_back():
    schema_keys = [key for key, _ in iter_options()]
    fields = _leaf_fields(RunConfig.from_dict(resolve_config({})))
    assert sorted(fields) == sorted(schema_keys)
    # ... in schema order, so that config.yaml lists the keys as before.
    assert fields == schema_keys


def test_a_key_without_a_field_is_refused():
    config = resolve_config({})
    config["solver"]["new_key"] = 1
    with pytest.raises(TypeError, match="new_key"):
        RunConfig.from_dict(config)
    config = resolve_config({})
    config["new_section"] = {}
    with pytest.raises(TypeError, match="new_section"):
        RunConfig.from_dict(config)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path):
    config = load_config(path)
    run = RunConfig.from_dict(config)
    assert run.to_dict() == config
    assert dump_config(run.to_dict()) == dump_config(config)


def test_rich_config_round_trips_and_is_typed():
    config = resolve_config(RICH)
    run = RunConfig.from_dict(config)
    assert run.to_dict() == config
    assert dump_config(run.to_dict()) == dump_config(config)
    assert run.sources == (
        SourceSpec(rate=-1.0, location=(0.5, 0.5), field=None, start=0.0, stop=0.02),
        SourceSpec(rate=2.0, location=None, field="exp(-x)", start=0.01, stop=None),
    )
    assert run.observations.sensors.points == ((0.2, 0.3), (0.7, 0.8))
    assert run.experiments.initial_conditions == ("bumps", "x * y")
    assert run.regularization.evidence_weights == (1e-2, 1e-3)
    assert run.model.boundary["left"]["dirichlet"] == 2.0
    assert run.model.grid == (32, 32) and run.optimizer.log_bounds == (-5.0, 5.0)


def test_sections_are_immutable():
    run = RunConfig.from_dict(resolve_config(RICH))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.solver.tol = 1e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.observations.sensors.count = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.sources[0].rate = 0.0
    with pytest.raises(TypeError):
        run.model.boundary["left"] = "neumann"
    with pytest.raises(TypeError):
        run.model.boundary["left"]["dirichlet"] = 0.0
    assert isinstance(run.model.boundary, types.MappingProxyType)

    def no_lists(value):
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                no_lists(getattr(value, f.name))
        elif isinstance(value, (tuple, types.MappingProxyType)):
            for v in value.values() if isinstance(value, types.MappingProxyType) else value:
                no_lists(v)
        else:
            assert not isinstance(value, (list, dict)), value

    no_lists(run)
    # The dict handed back is a copy: changing it leaves the sections as they were.
    config = run.to_dict()
    config["model"]["grid"][0] = 5
    config["model"]["boundary"]["left"]["dirichlet"] = 9.0
    assert run.model.grid == (32, 32) and run.model.boundary["left"]["dirichlet"] == 2.0
