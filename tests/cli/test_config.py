"""Config schema: defaults, validation messages, dotted overrides, round trip."""

import pytest
import yaml

from pdeinv.cli._config import (
    ConfigDeprecationWarning,
    ConfigError,
    apply_overrides,
    defaults,
    dump_config,
    iter_options,
    load_config,
    parse_override,
    resolve_config,
    schema_markdown,
)


def test_defaults_validate_and_name_from_file(write_file):
    config = load_config(write_file("seed: 3\n"))
    assert config["name"] == "run"
    assert config["seed"] == 3
    assert config["optimizer"]["max_iter"] == 200
    assert set(config) == set(defaults())


def test_unknown_key_suggests_nearest(write_file):
    with pytest.raises(
        ConfigError, match=r"unknown key 'optimizer.max_iters'.*'optimizer.max_iter'"
    ):
        load_config(write_file("optimizer:\n  max_iters: 5\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'noize'.*'noise'"):
        load_config(write_file("noize: {level: 0.1}\n"))


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("optimizer: {max_iter: -1}", r"optimizer.max_iter must be > 0"),
        ("optimizer: {max_iter: 2.5}", r"optimizer.max_iter must be an integer"),
        ("noise: {level: abc}", r"noise.level must be a number"),
        ("optimizer: {method: bfgs}", r"optimizer.method must be one of lbfgsb, adam"),
        ("model: {pde: wav}", r"model.pde must be one of .*did you mean 'wave'"),
        ("observations: {times: [0.2, 0.1]}", r"observations.times must be increasing"),
        ("observations: {times: [0.0, 0.1]}", r"observations.times must be > 0"),
        ("model: {grid: [16, 16], lower: [0, 0, 0]}", r"model.lower must have 2 entries"),
        ("check: {enabled: maybe}", r"check.enabled must be true or false"),
        ("model: 3", r"model must be a mapping"),
        (  # refused before the fit, not after it (the fit was lost)
            "uncertainty: {enabled: true, method: jacobian, hessian: gradient-difference}",
            r"uncertainty.method = jacobian forms the Gauss-Newton Hessian",
        ),
    ],
)
def test_bad_values_name_key_and_allowed(write_file, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write_file(text + "\n"))


def test_missing_files_named(write_file, tmp_path):
    with pytest.raises(ConfigError, match=r"model.mesh: file not found: .*nope.msh"):
        load_config(write_file("model: {mesh: nope.msh}\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write_file("a: [1, 2\n"))


def test_paths_resolved_relative_to_config(write_file, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.npz").write_bytes(b"")
    config = load_config(write_file("data: {source: file, file: sub/d.npz}\n"))
    assert config["data"]["file"] == str((tmp_path / "sub" / "d.npz").resolve())


def test_overrides_parse_yaml_scalars(write_file):
    path = write_file("noise: {level: 0.05}\n")
    config = load_config(
        path, ["optimizer.max_iter=20", "noise.level=1e-2", "model.grid=[8, 8]", "check.enabled=no"]
    )
    assert config["optimizer"]["max_iter"] == 20
    assert config["noise"]["level"] == 0.01
    assert config["model"]["grid"] == [8, 8]
    assert config["check"]["enabled"] is False
    assert parse_override("a.b= x y ") == ("a.b", "x y")
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("optimizer.max_iter")
    with pytest.raises(ConfigError, match="did you mean 'optimizer.max_iter'"):
        apply_overrides(defaults(), ["optimizer.maxiter=3"])


def test_resolved_config_round_trip(write_file):
    config = load_config(write_file("seed: 5\nregularization: {weight: 1.0e-4}\n"), ["seed=7"])
    again = resolve_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_old_key_dtype_is_precision_with_a_warning(write_file):
    with pytest.warns(ConfigDeprecationWarning, match="write `precision: float32` instead"):
        config = load_config(write_file("dtype: float32\n"))
    assert config["precision"] == "float32" and "dtype" not in config
    assert config["solver"]["tol"] == 1e-5  # float32's default tolerance followed it
    with pytest.warns(ConfigDeprecationWarning, match="old name of 'precision'"):
        assert resolve_config(None, ["dtype=float32"])["precision"] == "float32"
    with pytest.raises(ConfigError, match="'dtype' is the old name of 'precision' and they"):
        resolve_config({"dtype": "float32", "precision": "float64"})
    # The resolved config.yaml of an old run folder holds `dtype: null` ("not set").
    old_run = yaml.safe_load(dump_config(defaults())) | {"dtype": None, "precision": "float32"}
    assert resolve_config(old_run)["precision"] == "float32"
    assert resolve_config(None, ["dtype=null"])["precision"] == "float64"


def test_schema_markdown_lists_every_key():
    table = schema_markdown()
    for key, option in iter_options():
        assert f"`{key}`" in table
        assert option.doc
