"""Pieces shared by the sub-commands: common options, precision, run folders."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from .._threads import limit_blas_threads
from ._config import ConfigError, load_config


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


def configure_jax(config: dict) -> None:
    """Precision and threads of the run: the CLI (never the library) sets them."""
    import jax

    jax.config.update("jax_enable_x64", config["precision"] == "float64")
    # One BLAS thread: XLA already uses the cores, and the integrator's small
    # LAPACK kernels slow down ~100x under competing BLAS threads (pdeinv._threads).
    limit_blas_threads(1)


def prepare(args) -> dict:
    """Load + validate the config and set up JAX for it."""
    config = load_config(args.config, getattr(args, "overrides", ()) or ())
    configure_jax(config)
    return config


def run_folder(config: dict, out: str | None, force: bool) -> Path:
    """Create the run folder; refuse to overwrite unless ``force``."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path("runs") / f"{config['name']}-{stamp}"
        suffix = 1
        while folder.exists():  # two runs started within the same second
            suffix += 1
            folder = Path("runs") / f"{config['name']}-{stamp}-{suffix}"
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
