"""Run configuration: the schema (one place, with defaults and docs), loading, validation.

A config is a YAML mapping of sections; every key, its default, its allowed
values and its meaning live in :data:`SCHEMA`.  :func:`load_config` merges a
file with the defaults, applies ``dotted.key=value`` overrides, and checks
every value, raising :class:`ConfigError` with a one-line message that names
the key (and the nearest valid key for a typo).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user error in a config file or an override (message names the key)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One config key: default, type, allowed values, meaning."""

    default: Any
    kind: str  # int | float | bool | str | path | ints | floats | points | expr | exprs
    doc: str
    choices: tuple | None = None
    minimum: float | None = None
    positive: bool = False  # strictly > 0 (numbers, and every entry of lists)
    nullable: bool = False
    length: int | None = None  # required list length


FIELD_HELP = (
    "Built-in field (constant, inclusion, blobs, layered, bumps, random) or an expression in "
    "x, y, z, r with + - * / ** and sin cos exp log sqrt abs tanh minimum maximum where ..."
)

SCHEMA: dict[str, Any] = {
    "name": Option(
        None, "str", "Run name for the output folder; default: the config file name.", nullable=True
    ),
    "seed": Option(0, "int", "Seed of all randomness (noise, blobs, random sensors).", minimum=0),
    "precision": Option(
        "float64",
        "str",
        "Floating-point precision of the run (float32 runs without JAX's x64); formerly `dtype`.",
        choices=("float64", "float32"),
    ),
    "model": {
        "pde": Option(
            "heat",
            "str",
            "PDE: heat `u_t = div(kappa grad u)`, wave `u_tt = div(c^2 grad u)` (see "
            "`model.wave_form`; solved in velocity-stress form), advection_diffusion "
            "`u_t = div(kappa grad u) - v . grad u`.",
            choices=("heat", "wave", "advection_diffusion"),
        ),
        "wave_form": Option(
            "divergence",
            "str",
            "Wave operator: `divergence` div(c^2 grad u) (conservative) or `nondivergence` "
            "c^2 lap u (the seed paper's case study); wave only.",
            choices=("divergence", "nondivergence"),
        ),
        "grid": Option(
            [32, 32],
            "ints",
            "Cells per axis of the structured grid (1 to 3 entries).",
            positive=True,
        ),
        "lower": Option([0.0, 0.0], "floats", "Lower corner of the grid box."),
        "upper": Option([1.0, 1.0], "floats", "Upper corner of the grid box."),
        "mesh": Option(
            None,
            "path",
            "P1 finite-element mesh file (any meshio format; relative to the config file). "
            "When set, the grid keys are ignored (heat only).",
            nullable=True,
        ),
        "boundary": Option(
            "neumann",
            "boundary",
            "One homogeneous condition on the whole boundary, or a mapping per side "
            "(grid: left/right/bottom/top/back/front or xmin/xmax/...; mesh: physical-group "
            "names) to neumann/dirichlet or {dirichlet: value} / {neumann: du/dn} "
            "(docs/sources.md).",
            choices=("neumann", "dirichlet", "periodic"),
        ),
        "capacity": Option(
            1.0,
            "number_or_expr",
            "Capacity S in S u_t = div(K grad u) + q (heat capacity; storativity for "
            "groundwater heads): a number > 0 or an expression in x, y, z (heat only).",
        ),
        "initial_condition": Option(
            "bumps", "expr", "Initial state u(0) (displacement for wave). " + FIELD_HELP
        ),
    },
    "sources": Option(
        [],
        "sources",
        "Sources (heat only): point {location: [x, y], rate: Q} or volume {field: EXPR, "
        "rate: Q}, optional start [0] / stop [null]; rate > 0 injects (docs/sources.md).",
    ),
    "truth": {
        "field": Option(
            "inclusion",
            "expr",
            "True coefficient (kappa, or wave speed c) for synthetic data. " + FIELD_HELP,
        ),
        "background": Option(
            1.0, "float", "Background value of the built-in fields.", positive=True
        ),
        "contrast": Option(
            3.0, "float", "Feature value / background (inclusion, blobs, layered).", positive=True
        ),
        "center": Option(
            [0.6, 0.4], "floats", "Inclusion centre, relative to the bounding box (0..1)."
        ),
        "radius": Option(
            0.15,
            "float",
            "Inclusion / blob radius, or correlation length of `random`, relative to the box.",
            positive=True,
        ),
        "smooth_amplitude": Option(
            0.3, "float", "Relative amplitude of the smooth variation of `inclusion`.", minimum=0.0
        ),
        "num_features": Option(3, "int", "Number of blobs / layers / bump modes.", positive=True),
        "velocity": Option(
            [1.0, 0.5], "floats", "True advection velocity (advection_diffusion only)."
        ),
    },
    "data": {
        "source": Option(
            "synthetic",
            "str",
            "`synthetic`: simulate the truth and add noise; `file`: read `data.file`.",
            choices=("synthetic", "file"),
        ),
        "file": Option(
            None,
            "path",
            "`.npz` with `times` (T,), `observations` (T, M), optional `sensors` (M, dim) "
            "(else full field, M = number of nodes), `sigma` (scalar or (T, M)), `truth` (nodes,); "
            "or `.csv` with columns time, x, y[, z], value[, sigma] (docs/sources.md).",
            nullable=True,
        ),
    },
    "observations": {
        "times": Option(
            [0.01, 0.02, 0.04], "floats", "Observation times (positive, increasing).", positive=True
        ),
        "kind": Option(
            "full", "str", "Observe every node or point sensors.", choices=("full", "sensors")
        ),
        "sensors": {
            "count": Option(25, "int", "Number of sensors (layout grid/random).", positive=True),
            "layout": Option(
                "grid",
                "str",
                "Regular lattice inset from the boundary, or random nodes (seeded).",
                choices=("grid", "random"),
            ),
            "points": Option(
                None,
                "points",
                "Explicit sensor coordinates [[x, y], ...]; overrides count/layout.",
                nullable=True,
            ),
            "interpolation": Option(
                "linear",
                "str",
                "Value at a sensor: nearest node or linear (P1) interpolation.",
                choices=("nearest", "linear"),
            ),
        },
    },
    "noise": {
        "level": Option(
            0.01,
            "float",
            "Gaussian noise standard deviation relative to the RMS of the clean data. "
            "0: exact synthetic data, and the misfit is scaled by sigma = RMS of the clean "
            "data (a floor: sigma is never 0).",
            minimum=0.0,
        ),
    },
    "experiments": {
        "initial_conditions": Option(
            None,
            "exprs",
            "One experiment per entry (its initial condition; each has its own data, the "
            "misfits are summed); null = [model.initial_condition], or none when `random` > 0. "
            + FIELD_HELP,
            nullable=True,
        ),
        "random": Option(
            0,
            "int",
            "Add this many experiments with smooth random initial conditions (seeded "
            "Gaussian-process samples).",
            minimum=0,
        ),
        "length_scale": Option(
            0.15, "float", "Correlation length of the random initial conditions.", positive=True
        ),
        "batch_size": Option(
            None,
            "int",
            "Experiments solved at once per device (vmap); null = all on GPU/TPU, 1 on CPU "
            "(see docs/scale.md). Smaller bounds memory.",
            positive=True,
            nullable=True,
        ),
    },
    "parameterization": {
        "kind": Option(
            "nodal",
            "str",
            "Unknowns: log-coefficient per node, per box region, or on a coarse grid "
            "interpolated to the nodes; `initial_condition`: the initial state per node "
            "(the coefficient is known, truth.field; a linear problem, docs/uncertainty.md).",
            choices=("nodal", "regions", "coarse", "initial_condition"),
        ),
        "regions": Option([4, 4], "ints", "Boxes per axis for `regions`.", positive=True),
        "coarse_grid": Option(
            [8, 8], "ints", "Coarse grid nodes per axis for `coarse`.", minimum=2
        ),
        "initial_value": Option(
            1.0, "float", "Constant coefficient the optimiser starts from.", positive=True
        ),
        "fit_velocity": Option(
            True, "bool", "Also recover the velocity (advection_diffusion only)."
        ),
        "initial_velocity": Option(
            [0.0, 0.0], "floats", "Velocity the optimiser starts from (advection_diffusion)."
        ),
    },
    "regularization": {
        "kind": Option(
            "h1",
            "str",
            "Penalty on m = log(coefficient): Tikhonov 0.5*int (m - m0)^2, H1 seminorm "
            "0.5*int |grad m|^2, smoothed total variation int sqrt(|grad m|^2 + eps^2), "
            "bilaplacian 0.5*||(delta - gamma lap)(m - m0)||^2 (a Matern-like Gaussian prior "
            "with `correlation_length` and `prior_variance`; docs/uncertainty.md).",
            choices=("h1", "tikhonov", "tv", "bilaplacian", "none"),
        ),
        "weight": Option(1.0, "float", "Regularisation weight (fixed choice).", minimum=0.0),
        "prior_mean": Option(
            None,
            "float",
            "Coefficient value the Tikhonov term pulls towards; default initial_value.",
            positive=True,
            nullable=True,
        ),
        "tv_epsilon": Option(0.1, "float", "Smoothing of total variation.", positive=True),
        "correlation_length": Option(
            None,
            "float",
            "Correlation length of the bilaplacian prior (domain units); null = a quarter "
            "of the longest side of the domain.",
            positive=True,
            nullable=True,
        ),
        "prior_variance": Option(
            1.0,
            "float",
            "Pointwise variance of m under the bilaplacian prior at weight 1 (the weight "
            "divides it), away from the boundary.",
            positive=True,
        ),
        "choose_weight": Option(
            "fixed",
            "str",
            "`fixed`: use `weight`; `morozov`: largest of `morozov_weights` whose misfit "
            "reaches the noise level (discrepancy principle); `evidence`: the one of "
            "`evidence_weights` with the largest Laplace log evidence (docs/uncertainty.md).",
            choices=("fixed", "morozov", "evidence"),
        ),
        "evidence_weights": Option(
            None,
            "floats",
            "Weights tried by choose_weight = evidence (largest first, warm-started); "
            "null = morozov_weights.",
            positive=True,
            nullable=True,
        ),
        "morozov_weights": Option(
            [1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
            "floats",
            "Weights tried (largest first, warm-started).",
            minimum=0.0,
        ),
        "morozov_tau": Option(
            1.0, "float", "Accept when misfit <= tau * (number of data) / 2.", positive=True
        ),
    },
    "optimizer": {
        "method": Option(
            "lbfgsb",
            "str",
            "scipy L-BFGS-B on jax.value_and_grad, optax Adam, or inexact Newton–CG on the "
            "Gauss–Newton Hessian (jax.jvp + jax.vjp through pdeinv.expm_multiply; see "
            "docs/newton_cg.md).",
            choices=("lbfgsb", "adam", "newton_cg"),
        ),
        "max_iter": Option(
            200, "int", "Maximum iterations (Newton steps for newton_cg).", positive=True
        ),
        "gtol": Option(
            1e-6,
            "float",
            "Stop when the gradient norm is below (lbfgsb, newton_cg: max-norm of the "
            "projected gradient; adam: 2-norm).",
            minimum=0.0,
        ),
        "ftol": Option(
            1e-10,
            "float",
            "Stop when an iteration lowers the objective by less than ftol * max(|f|, 1) "
            "(lbfgsb: per iteration; newton_cg: per Newton step, and each CG run stops once "
            "one Hessian-vector product lowers the quadratic model by less; adam: over 20 "
            "iterations).",
            minimum=0.0,
        ),
        "learning_rate": Option(0.05, "float", "Adam step size.", positive=True),
        "log_bounds": Option(
            [-5.0, 5.0],
            "floats",
            "Bounds on the log-coefficient for L-BFGS-B and Newton–CG (keeps the PDE well "
            "posed and the solves cheap).",
            length=2,
        ),
        "max_cg": Option(
            50,
            "int",
            "newton_cg: most CG iterations (Gauss–Newton Hessian–vector products, a tangent "
            "and an adjoint solve each) per Newton step.",
            positive=True,
        ),
        "forcing_max": Option(
            0.5,
            "float",
            "newton_cg: largest relative CG residual (Eisenstat–Walker forcing term; the "
            "first step uses it), in (0, 1).",
            positive=True,
        ),
        "cg_memory": Option(
            50,
            "int",
            "newton_cg: (d, H d) pairs of earlier CG runs kept to precondition the next "
            "(limited-memory inverse Hessian, no extra solves); 0 = plain CG.",
            minimum=0,
        ),
        "product_tol": Option(
            0.001,
            "float",
            "newton_cg: the Hessian-vector products of a Newton step solve their tangent and "
            "adjoint PDEs at tol product_tol * (CG forcing term), never tighter than "
            "solver.tol (one more forward and adjoint solve per step); in (0, 1]; "
            "null = every product at solver.tol.",
            positive=True,
            nullable=True,
        ),
        "trust_radius": Option(
            None,
            "float",
            "newton_cg: initial radius of the Steihaug CG step in the log-coefficient "
            "(adapted after each step); null = no radius.",
            positive=True,
            nullable=True,
        ),
    },
    "solver": {
        "tol": Option(
            None,
            "float",
            "Tolerance of pdeinv.expm_multiply; null = 1e-8 (float64) or 1e-5 (float32).",
            positive=True,
            nullable=True,
        ),
        "krylov_dim": Option(30, "int", "Krylov subspace dimension.", minimum=2),
        "max_steps": Option(
            1000,
            "int",
            "Step budget of one solve; running out is an error (costs no memory by itself).",
            positive=True,
        ),
        "method": Option(
            "auto",
            "str",
            "Krylov method; auto = the model's structure: skew Lanczos for the wave "
            "(velocity-stress form), Lanczos for symmetric models, else Arnoldi.",
            choices=("auto", "arnoldi", "lanczos", "skew-lanczos"),
        ),
        "checkpoint": Option(
            "trajectory",
            "str",
            "What the forward solve keeps for the gradient (expm_multiply's checkpoint): "
            "trajectory = states plus small trajectory bases (least work), states = "
            "states only (least memory), bases = every Krylov basis (small problems).",
            choices=("trajectory", "states", "bases"),
        ),
    },
    "check": {
        "enabled": Option(
            True, "bool", "Re-simulate the recovered field with diffrax (diffrax_check)."
        ),
        "solver": Option(
            "tsit5",
            "str",
            "diffrax solver of pdeinv.reference.solve.",
            choices=("tsit5", "dopri5", "dopri8", "kvaerno5"),
        ),
        "rtol": Option(
            None,
            "float",
            "Relative tolerance of the diffrax check; null = 1e-10 (float64) or 1e-6 (float32).",
            positive=True,
            nullable=True,
        ),
        "atol": Option(
            None,
            "float",
            "Absolute tolerance of the diffrax check; null = 1e-12 (float64) or 1e-8 (float32).",
            positive=True,
            nullable=True,
        ),
    },
    "uncertainty": {
        "enabled": Option(
            False,
            "bool",
            "After the fit, compute the Laplace posterior at the MAP point: posterior std, "
            "samples, Hessian spectrum, log evidence (docs/uncertainty.md).",
        ),
        "rank": Option(
            None,
            "int",
            "Eigenpairs of the prior-preconditioned misfit Hessian kept; null = "
            "min(number of unknowns, 200). Exact (no truncation) when rank reaches the "
            "number of unknowns or of data (jacobian computes every pair: a larger rank "
            "costs nothing more), or rank + oversampling does (products).",
            positive=True,
            nullable=True,
        ),
        "samples": Option(4, "int", "Posterior samples written and drawn.", minimum=0),
        "method": Option(
            "auto",
            "str",
            "Eigensolver: jacobian (the prior-preconditioned Jacobian by central differences "
            "of the forward model, 2 x unknowns + 1 forward solves, then every eigenpair "
            "exactly; compiles the forward model only), randomized double pass (batched "
            "Gauss-Newton products), nystrom (randomized single pass: half the products) or "
            "Lanczos with full reorthogonalisation (one product at a time); auto = jacobian "
            "when that matrix fits in 1 GiB and unknowns <= 10 x (rank + oversampling), "
            "else randomized (docs/uncertainty.md).",
            choices=("auto", "jacobian", "randomized", "nystrom", "lanczos"),
        ),
        "oversampling": Option(
            10,
            "int",
            "Extra random vectors (randomized, nystrom) or steps (Lanczos); not used by jacobian.",
            minimum=0,
        ),
        "nugget": Option(
            0.01,
            "float",
            "Precision of the weak Tikhonov term that makes an improper prior proper (h1, tv, "
            "none; and unknowns the regulariser does not see, e.g. a velocity).",
            positive=True,
        ),
        "batch_size": Option(
            8,
            "int",
            "Hessian-vector products (jacobian: columns, two forward solves each) computed "
            "at once (vmap).",
            positive=True,
        ),
        "hessian": Option(
            "gauss-newton",
            "str",
            "Misfit Hessian products: gauss-newton (J by forward mode, then its adjoint; one "
            "compilation) or gradient-difference (central difference of the fit's own "
            "compiled gradient: nothing to compile, two gradients per product, the full "
            "misfit Hessian; docs/uncertainty.md).",
            choices=("gauss-newton", "gradient-difference"),
        ),
    },
    "output": {
        "vtu": Option(True, "bool", "Write fields.vtu (ParaView)."),
        "figures": Option(True, "bool", "Draw kappa.png, convergence.png, fit.png."),
        "checkpoint_every_s": Option(
            60.0,
            "float",
            "During `fit`, refresh result.npz (best iterate, history) and metrics.json "
            "(status running) at most this often, so a killed run loses at most this "
            "much; `fit --resume RUN_DIR` continues from it. 0 = after every iteration.",
            minimum=0.0,
        ),
    },
}


def iter_options(schema=None, prefix=""):
    """Yield ``(dotted_key, Option)`` for every leaf of the schema."""
    schema = SCHEMA if schema is None else schema
    for key, value in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from iter_options(value, dotted + ".")
        else:
            yield dotted, value


def defaults(schema=None) -> dict:
    """The default config as a nested dict."""
    schema = SCHEMA if schema is None else schema
    return {
        key: defaults(value) if isinstance(value, dict) else copy.deepcopy(value.default)
        for key, value in schema.items()
    }


def _suggest(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


# Top-level keys under an old name: old -> new.  The old name still works, with a
# ConfigDeprecationWarning; ``dtype: null`` (in resolved configs of old run
# folders, meaning "not set") is dropped silently.
_RENAMED = {"dtype": "precision"}


class ConfigDeprecationWarning(FutureWarning):
    """A config key given under its old name (the message names the new one)."""


def _renamed(key: str, value: Any) -> str:
    """The current name of top-level ``key`` (a warning when it is an old one)."""
    if key not in _RENAMED:
        return key
    if value is not None:
        warnings.warn(
            f"config key {key!r} is deprecated: it is the old name of {_RENAMED[key]!r}; "
            f"write `{_RENAMED[key]}: {value}` instead (same meaning)",
            ConfigDeprecationWarning,
            stacklevel=4,
        )
    return _RENAMED[key]


def _rename_old_keys(raw: Any) -> Any:
    """``raw`` with its old top-level key names replaced (both names, if they differ: error)."""
    if not isinstance(raw, dict) or not any(old in raw for old in _RENAMED):
        return raw
    out = {key: value for key, value in raw.items() if key not in _RENAMED}
    for old, new in _RENAMED.items():
        if old not in raw or raw[old] is None:
            continue
        if new in raw and raw[new] != raw[old]:
            raise ConfigError(
                f"{old!r} is the old name of {new!r} and they disagree "
                f"({old}: {raw[old]}, {new}: {raw[new]}); keep only {new!r}"
            )
        out[_renamed(old, raw[old])] = raw[old]
    return out


def _merge(target: dict, source: Any, schema: dict, prefix: str) -> None:
    if not isinstance(source, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where} must be a mapping of keys, got {type(source).__name__}")
    for key, value in source.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            all_keys = [k for k, _ in iter_options()] + list(schema)
            suggestion = _suggest(dotted, all_keys) or _suggest(str(key), schema)
            raise ConfigError(f"unknown key {dotted!r}{suggestion}")
        if isinstance(schema[key], dict):
            _merge(target[key], value, schema[key], dotted + ".")
        else:
            target[key] = value


def _lookup(schema: dict, dotted: str) -> Option | dict:
    node: Any = schema
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            all_keys = [k for k, _ in iter_options()]
            raise ConfigError(f"unknown key {dotted!r}{_suggest(dotted, all_keys)}")
        node = node[part]
        if isinstance(node, Option) and i < len(parts) - 1:
            raise ConfigError(f"{'.'.join(parts[: i + 1])!r} is a value, not a section")
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """``"optimizer.max_iter=20"`` -> ``("optimizer.max_iter", 20)`` (value as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"cannot parse the value of override {key!r}: {problem}") from None
    return key, value


def apply_overrides(config: dict, overrides) -> dict:
    """Return a copy of ``config`` with ``dotted.key=value`` overrides set."""
    config = copy.deepcopy(config)
    for text in overrides:
        key, value = parse_override(text)
        if key in _RENAMED and value is None:
            continue  # e.g. dtype=null: "not set", as it always meant
        key = _renamed(key, value)
        option = _lookup(SCHEMA, key)
        if isinstance(option, dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{key!r} is a section; set one of its keys, e.g. {key}.<key>=..."
                )
            node = config
            for part in key.split("."):
                node = node[part]
            _merge(node, value, option, key + ".")
            continue
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def _as_float(key, value, option):
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if isinstance(value, int) and not _fits_float(value):
        raise ConfigError(
            f"{key} must be a finite number, got an integer of {len(str(value))} digits"
        )
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _check_number(key, value, option):
    if option.positive and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    if option.minimum is not None and value < option.minimum:
        raise ConfigError(f"{key} must be >= {option.minimum}, got {value!r}")


def _check_value(key: str, value: Any, option: Option, base: Path) -> Any:
    if value is None:
        if option.nullable:
            return None
        raise ConfigError(f"{key} must be set ({option.kind}); it cannot be null")
    kind = option.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        _check_number(key, value, option)
    elif kind == "float":
        value = _as_float(key, value, option)
        _check_number(key, value, option)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif kind in ("str", "expr"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        if option.choices is not None and value not in option.choices:
            raise ConfigError(
                f"{key} must be one of {', '.join(option.choices)}; got {value!r}"
                + _suggest(value, option.choices)
            )
    elif kind == "path":
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key} must be a file path, got {value!r}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = (base / path).resolve()
        if not path.is_file():
            raise ConfigError(f"{key}: file not found: {path}")
        value = str(path)
    elif kind in ("ints", "floats"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key} must be a non-empty list of numbers, got {value!r}")
        if option.length is not None and len(value) != option.length:
            raise ConfigError(f"{key} must have {option.length} entries, got {value!r}")
        if kind == "ints":
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{key} must be a list of integers, got {value!r}")
        else:
            value = [_as_float(key, v, option) for v in value]
        for v in value:
            _check_number(key, v, option)
    elif kind == "exprs":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{key} must be a non-empty list of fields/expressions, got {value!r}"
            )
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{key} must be a list of non-empty strings, got {value!r}")
    elif kind == "points":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key} must be a list of coordinates [[x, y], ...], got {value!r}")
        rows = []
        for row in value:
            if not isinstance(row, list) or not row:
                raise ConfigError(f"{key} must be a list of coordinates [[x, y], ...]")
            rows.append([_as_float(key, v, option) for v in row])
        if len({len(r) for r in rows}) != 1:
            raise ConfigError(f"{key}: every point must have the same number of coordinates")
        value = rows
    elif kind == "boundary":
        value = _check_boundary(key, value, option)
    elif kind == "number_or_expr":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = _as_float(key, value, option)
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key} must be a number or an expression, got {value!r}")
    elif kind == "sources":
        value = _check_sources(key, value)
    else:  # pragma: no cover - schema bug
        raise AssertionError(kind)
    return value


_BOUNDARY_KINDS = ("dirichlet", "neumann", "periodic")
_SOURCE_KEYS = ("location", "field", "rate", "start", "stop")


def _check_boundary(key: str, value: Any, option: Option):
    """A condition name, or a mapping side/tag -> name or {kind: number}."""
    if isinstance(value, str):
        if value not in option.choices:
            raise ConfigError(
                f"{key} must be one of {', '.join(option.choices)} or a mapping per side; got "
                f"{value!r}" + _suggest(value, option.choices)
            )
        return value
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{key} must be a condition name or a mapping like {{left: {{dirichlet: 1.0}}, "
            f"right: neumann}}, got {value!r}"
        )
    out = {}
    for side, spec in value.items():
        where = f"{key}.{side}"
        if isinstance(spec, str):
            if spec not in _BOUNDARY_KINDS:
                raise ConfigError(
                    f"{where} must be one of {', '.join(_BOUNDARY_KINDS)}; got {spec!r}"
                    + _suggest(spec, _BOUNDARY_KINDS)
                )
            out[str(side)] = spec
            continue
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(
                f"{where} must be dirichlet, neumann, periodic or a mapping with one entry "
                f"like {{dirichlet: 1.0}}, got {spec!r}"
            )
        ((kind, number),) = spec.items()
        if kind not in _BOUNDARY_KINDS:
            raise ConfigError(
                f"{where}: unknown condition {kind!r}" + _suggest(str(kind), _BOUNDARY_KINDS)
            )
        if kind == "periodic":
            out[str(side)] = "periodic"
            continue
        out[str(side)] = {
            kind: 0.0 if number is None else _as_float(f"{where}.{kind}", number, option)
        }
    return out


def _check_sources(key: str, value: Any) -> list:
    """The `sources` list: point {location, rate[, start, stop]} or volume {field, rate, ...}."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of sources, got {value!r}")
    out = []
    for i, src in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(src, dict):
            raise ConfigError(
                f"{where} must be a mapping like {{location: [x, y], rate: Q}}, got {src!r}"
            )
        for name in src:
            if name not in _SOURCE_KEYS:
                raise ConfigError(
                    f"unknown key {where}.{name!r}" + _suggest(str(name), _SOURCE_KEYS)
                )
        if ("location" in src) == ("field" in src):
            raise ConfigError(
                f"{where} needs exactly one of location (point source) or field (volume source)"
            )
        if "rate" not in src:
            raise ConfigError(f"{where}.rate must be set (rate > 0 injects, < 0 extracts)")
        entry = {"rate": _finite(f"{where}.rate", src["rate"])}
        if "location" in src:
            location = src["location"]
            if not isinstance(location, list) or not location:
                raise ConfigError(f"{where}.location must be a list of coordinates [x, y(, z)]")
            entry["location"] = [_finite(f"{where}.location", v) for v in location]
        else:
            field = src["field"]
            if isinstance(field, (int, float)) and not isinstance(field, bool):
                field = str(_finite(f"{where}.field", field))
            if not isinstance(field, str) or not field.strip():
                raise ConfigError(f"{where}.field must be an expression, got {field!r}")
            entry["field"] = field
        start = src.get("start", 0.0)
        start = 0.0 if start is None else _finite(f"{where}.start", start)
        if start < 0:
            raise ConfigError(f"{where}.start must be >= 0, got {start!r}")
        stop = src.get("stop")
        if stop is not None:
            stop = _finite(f"{where}.stop", stop)
            if stop <= start:
                raise ConfigError(f"{where}.stop must be > start = {start:g}, got {stop!r}")
        entry["start"], entry["stop"] = start, stop
        out.append(entry)
    return out


def _finite(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a finite number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _validate(config: dict, schema: dict, base: Path, prefix: str = "") -> None:
    for key, option in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(option, dict):
            _validate(config[key], option, base, dotted + ".")
        else:
            config[key] = _check_value(dotted, config[key], option, base)


def _cross_check(config: dict) -> None:
    model, obs = config["model"], config["observations"]
    dim = len(model["grid"])
    if model["mesh"] is None:
        if dim not in (1, 2, 3):
            raise ConfigError(f"model.grid must have 1 to 3 entries, got {model['grid']}")
        if min(model["grid"]) < 2:
            raise ConfigError(f"model.grid needs at least 2 cells per axis, got {model['grid']}")
        for key in ("lower", "upper"):
            if len(model[key]) != dim:
                raise ConfigError(f"model.{key} must have {dim} entries like model.grid")
        if any(b <= a for a, b in zip(model["lower"], model["upper"], strict=True)):
            raise ConfigError("model.upper must exceed model.lower on every axis")
    elif model["pde"] != "heat":
        raise ConfigError(f"model.mesh works with model.pde = heat only, got {model['pde']!r}")
    times = obs["times"]
    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        raise ConfigError(f"observations.times must be increasing, got {times}")
    if config["data"]["source"] == "file" and config["data"]["file"] is None:
        raise ConfigError("data.file must name a .npz or .csv file when data.source = file")
    if model["boundary"] == "periodic" and model["mesh"] is not None:
        raise ConfigError("model.boundary = periodic needs a grid, not model.mesh")
    _cross_check_sources(config)
    _cross_check_uncertainty(config)
    _cross_check_optimizer(config["optimizer"])
    if config["data"]["source"] == "file" and (
        config["experiments"]["initial_conditions"] is not None or config["experiments"]["random"]
    ):
        raise ConfigError(
            "experiments need data.source = synthetic (data files hold one experiment)"
        )


def _cross_check_uncertainty(config: dict) -> None:
    """Evidence needs a Gaussian prior; the initial-condition unknowns need one experiment;
    the Jacobian eigensolver forms the Gauss-Newton Hessian (refused here, not after the fit)."""
    reg, par = config["regularization"], config["parameterization"]
    unc = config["uncertainty"]
    if unc["method"] == "jacobian" and unc["hessian"] == "gradient-difference":
        raise ConfigError(
            "uncertainty.method = jacobian forms the Gauss-Newton Hessian; with "
            "uncertainty.hessian = gradient-difference use randomized, nystrom or lanczos"
        )
    if reg["choose_weight"] == "evidence" and reg["kind"] == "tv":
        raise ConfigError(
            "regularization.choose_weight = evidence needs a Gaussian prior "
            "(regularization.kind h1, tikhonov, bilaplacian or none), got tv"
        )
    if par["kind"] == "initial_condition":
        if config["model"]["pde"] == "wave":
            raise ConfigError(
                "parameterization.kind = initial_condition works with model.pde heat or "
                "advection_diffusion, got wave"
            )
        if config["data"]["source"] != "synthetic":
            raise ConfigError(
                "parameterization.kind = initial_condition needs data.source = synthetic "
                "(the true initial state is model.initial_condition)"
            )
        if (
            config["experiments"]["initial_conditions"] is not None
            or config["experiments"]["random"]
        ):
            raise ConfigError(
                "parameterization.kind = initial_condition recovers one initial state; "
                "it does not go with experiments"
            )


def _cross_check_optimizer(opt: dict) -> None:
    lo, hi = opt["log_bounds"]
    if lo > hi:
        raise ConfigError(
            f"optimizer.log_bounds must be [low, high] with low <= high, got {[lo, hi]}"
        )
    if opt["method"] == "newton_cg" and not opt["forcing_max"] < 1:
        raise ConfigError(f"optimizer.forcing_max must be in (0, 1), got {opt['forcing_max']}")
    if opt["product_tol"] is not None and opt["product_tol"] > 1:
        raise ConfigError(
            f"optimizer.product_tol must be in (0, 1] or null, got {opt['product_tol']}"
        )


def _cross_check_sources(config: dict) -> None:
    """Sources, capacity and per-side boundary data need heat; locations need dim entries."""
    model = config["model"]
    if model["pde"] != "wave" and model["wave_form"] != "divergence":
        raise ConfigError(f"model.wave_form works with model.pde = wave only, got {model['pde']!r}")
    if model["pde"] != "heat":
        if config["sources"]:
            raise ConfigError(f"sources work with model.pde = heat only, got {model['pde']!r}")
        if model["capacity"] != 1.0:
            raise ConfigError(
                f"model.capacity works with model.pde = heat only, got {model['pde']!r}"
            )
    if model["mesh"] is None:
        from ..discretize._grid import side_aliases, side_names

        dim = len(model["grid"])
        if isinstance(model["boundary"], dict):
            sides = [*side_names(dim), *side_aliases(dim), *"xyz"[:dim], "default"]
            for side in model["boundary"]:
                if side not in sides:
                    raise ConfigError(
                        f"model.boundary: unknown side {side!r}"
                        + _suggest(side, sides)
                        + f" (sides of a {dim}-D grid: {', '.join(sides)})"
                    )
        for i, src in enumerate(config["sources"]):
            if "location" not in src:
                continue
            location = src["location"]
            if len(location) != dim:
                raise ConfigError(
                    f"sources[{i}].location must have {dim} coordinates like model.grid, "
                    f"got {location}"
                )
            lower, upper = model["lower"], model["upper"]
            if any(not lo <= x <= hi for x, lo, hi in zip(location, lower, upper, strict=True)):
                raise ConfigError(
                    f"sources[{i}].location {location} lies outside the domain "
                    f"[{lower}, {upper}] (model.lower, model.upper)"
                )


def resolve_config(raw: dict | None, overrides=(), *, base: str | os.PathLike = ".") -> dict:
    """Defaults + ``raw`` + overrides, validated; relative paths resolved against ``base``."""
    config = defaults()
    if raw is not None:
        _merge(config, _rename_old_keys(raw), SCHEMA, "")
    config = apply_overrides(config, overrides)
    _validate(config, SCHEMA, Path(base))
    _cross_check(config)
    _fill_precision_defaults(config)
    return config


# Tolerances a precision can reach: (expm tol, diffrax rtol, diffrax atol).
_TOLERANCES = {"float64": (1e-8, 1e-10, 1e-12), "float32": (1e-5, 1e-6, 1e-8)}


def _fill_precision_defaults(config: dict) -> None:
    tol, rtol, atol = _TOLERANCES[config["precision"]]
    for section, key, value in (
        ("solver", "tol", tol),
        ("check", "rtol", rtol),
        ("check", "atol", atol),
    ):
        if config[section][key] is None:
            config[section][key] = value
    if config["precision"] == "float32" and config["solver"]["tol"] < 1e-6:
        raise ConfigError(
            f"solver.tol = {config['solver']['tol']:g} is below what float32 can reach; "
            "use solver.tol >= 1e-6 or precision: float64"
        )


def load_config(path: str | os.PathLike, overrides=()) -> dict:
    """Read, merge with defaults, override, and validate a YAML config file.

    The returned dict is the *resolved* config: every key present, paths absolute,
    ``name`` filled in.  Saving it as YAML and loading it again gives the same run.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    config = resolve_config(raw, overrides, base=path.parent)
    if config["name"] is None:
        config["name"] = path.stem
    return config


def dump_config(config: dict) -> str:
    """YAML text of a resolved config (keys in schema order)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def schema_markdown() -> str:
    """Markdown table of every config key with default and meaning (for docs/config.md)."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, option in iter_options():
        default = (
            "null"
            if option.default is None
            else yaml.safe_dump(option.default, default_flow_style=True)
            .strip()
            .removesuffix("...")
            .strip()
        )
        if option.choices:
            allowed = " \\| ".join(option.choices)
            if option.kind == "boundary":
                allowed += " or a mapping per side / tag"
        else:
            allowed = {
                "int": "integer",
                "float": "number",
                "bool": "true \\| false",
                "str": "string",
                "path": "file path",
                "ints": "list of integers",
                "floats": "list of numbers",
                "points": "list of points",
                "expr": "field name or expression",
                "exprs": "list of fields or expressions",
                "boundary": "",
                "number_or_expr": "number > 0 or expression",
                "sources": "list of sources",
            }[option.kind]
            if option.positive:
                allowed += " > 0"
            elif option.minimum is not None:
                allowed += f" >= {option.minimum:g}"
        if option.nullable:
            allowed += " or null"
        doc = option.doc.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {allowed} | {doc} |")
    return "\n".join(lines) + "\n"
