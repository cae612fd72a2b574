"""Pieces shared by the sub-commands: common options, precision, run folders."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from .._threads import limit_blas_threads
from ._config import ConfigError, load_config
from ._sections import RunConfig


def add_config_arguments(parser, *, overrides: bool = True) -> None:
    parser.add_argument("config", metavar="CONFIG.yaml", help="run configuration (YAML)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="run folder (default: runs/<config name>-<timestamp>/)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the run folder if it already exists"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    if overrides:
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="dotted.key=value",
            help="override config values, e.g. optimizer.max_iter=20 noise.level=0.02",
        )


def configure_jax(precision: str) -> None:
    """Precision (``"float64"`` or ``"float32"``) and threads of the run: the CLI (never
    the library) sets them."""
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")
    # One BLAS thread: XLA already uses the cores, and the integrator's small
    # LAPACK kernels slow down ~100x under competing BLAS threads (pdeinv._threads).
    limit_blas_threads(1)


def prepare(args) -> RunConfig:
    """Load + validate the config, read it into sections, and set up JAX for it."""
    config = RunConfig.from_dict(load_config(args.config, getattr(args, "overrides", ()) or ()))
    configure_jax(config.precision)
    return config


def run_folder(name: str, out: str | None, force: bool) -> Path:
    """Create the run folder (default ``runs/<name>-<timestamp>``); refuse to overwrite
    unless ``force``."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path("runs") / f"{name}-{stamp}"
        suffix = 1
        while folder.exists():  # two runs started within the same second
            suffix += 1
            folder = Path("runs") / f"{name}-{stamp}-{suffix}"
    else:
        folder = Path(out)
    if folder.exists():
        if not force:
            raise ConfigError(f"run folder {folder} already exists; use --force to overwrite it")
        if folder.is_dir():
            shutil.rmtree(folder)
        else:
            os.remove(folder)
    folder.mkdir(parents=True)
    return folder
