"""``fit`` with ``uncertainty.enabled``: every output of the Laplace posterior; its config keys."""

import json

import meshio
import numpy as np
import pytest

from pdeinv.cli import main
from pdeinv.cli._config import ConfigError, resolve_config
from pdeinv.report import read_result

TINY = """
seed: 1
model: {pde: heat, grid: [6, 6], initial_condition: bumps}
truth: {field: inclusion, radius: 0.25}
observations: {times: [0.005, 0.01]}
noise: {level: 0.01}
parameterization: {kind: coarse, coarse_grid: [3, 3]}
regularization: {kind: bilaplacian, weight: 1.0, correlation_length: 0.4}
optimizer: {max_iter: 5}
check: {enabled: false}
uncertainty: {enabled: true, samples: 3, rank: 4, oversampling: 2}
"""


# ~36 s on the 2-core VM; in the default run as the one CLI fit with uncertainty (the
# merge of typed config sections broke its metrics once and only this test saw it).
def test_fit_with_uncertainty_writes_every_output(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    assert main(["fit", str(config), "--out", str(out), "--quiet"]) == 0
    result = read_result(out)
    nodes = result["points"].shape[0]
    assert result["posterior_std"].shape == (9,)  # the optimisation vector: 3x3 coarse grid
    assert result["posterior_std_field"].shape == (nodes,)
    assert result["posterior_samples"].shape == (3, nodes)
    assert np.all(result["posterior_samples"] > 0)  # samples of kappa, not of log kappa
    eigenvalues = result["hessian_eigenvalues"]
    assert eigenvalues.shape == (4,) and np.all(np.diff(eigenvalues) <= 0)
    # The data shrink the prior: posterior std below the prior's everywhere.
    assert np.all(result["posterior_std_field"] <= result["prior_std_field"] + 1e-12)
    assert np.all(result["posterior_std"] > 0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["log_evidence"])
    assert metrics["effective_parameters"] == pytest.approx(
        float(np.sum(eigenvalues / (1 + eigenvalues)))
    )
    assert 0.0 <= metrics["coverage_2sigma"] <= 1.0
    # method auto: 9 unknowns, a small Jacobian: 2 x 9 + 1 forward evaluations, no products.
    info = metrics["uncertainty"]
    assert info["method"] == "jacobian" and info["residual_evaluations"] == 19
    assert info["hessian_products"] == 0 and info["hessian_kind"] == "gauss-newton-jacobian"
    vtu = meshio.read(out / "fields.vtu")
    np.testing.assert_allclose(vtu.point_data["log_kappa_std"], result["posterior_std_field"])
    for figure in ("uncertainty.png", "spectrum.png"):
        assert (out / figure).stat().st_size > 10_000
    # `plot` redraws them from result.npz alone.
    (out / "spectrum.png").unlink()
    assert main(["plot", str(out)]) == 0
    assert (out / "spectrum.png").is_file()


def test_uncertainty_defaults_and_key_errors():
    config = resolve_config({})
    assert config["uncertainty"]["enabled"] is False
    assert config["uncertainty"]["rank"] is None
    assert config["uncertainty"]["samples"] == 4
    with pytest.raises(ConfigError, match="uncertainty.method must be one of"):
        resolve_config({"uncertainty": {"method": "arnoldi"}})
    with pytest.raises(ConfigError, match="uncertainty.rank must be > 0"):
        resolve_config({"uncertainty": {"rank": 0}})
    with pytest.raises(ConfigError, match="choose_weight = evidence needs a Gaussian prior"):
        resolve_config({"regularization": {"kind": "tv", "choose_weight": "evidence"}})
    with pytest.raises(ConfigError, match="initial_condition works with model.pde heat"):
        resolve_config(
            {"model": {"pde": "wave"}, "parameterization": {"kind": "initial_condition"}}
        )
    with pytest.raises(ConfigError, match="regularization.correlation_length must be > 0"):
        resolve_config({"regularization": {"correlation_length": -1.0}})
    with pytest.raises(ConfigError, match="unknown key 'uncertainty.rnak'"):
        resolve_config({"uncertainty": {"rnak": 3}})


@pytest.mark.slow
def test_choose_weight_by_evidence(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    overrides = [
        "regularization.choose_weight=evidence",
        "regularization.evidence_weights=[10.0, 1.0, 0.1]",
        "uncertainty.method=randomized",  # the products' path through the CLI
    ]
    assert main(["fit", str(config), "--out", str(out), "--quiet", *overrides]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    evidence = metrics["evidence"]
    assert evidence["weights_tried"][0] == 10.0
    best = int(np.argmax(evidence["log_evidences"]))
    assert evidence["chosen_weight"] == evidence["weights_tried"][best]
    assert metrics["regularization_weight"] == evidence["chosen_weight"]
    info = metrics["uncertainty"]
    assert info["method"] == "randomized" and info["hessian_products"] > 0
    assert info["residual_evaluations"] == 0
    # The run's posterior is the one at the chosen weight.
    assert metrics["log_evidence"] == pytest.approx(evidence["log_evidences"][best])
