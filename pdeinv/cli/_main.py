"""``python -m pdeinv``: argument parsing and dispatch to the sub-commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

# Sub-command modules, each exposing register(subparsers) and run(args) -> int.
_COMMANDS = ("_fit", "_simulate", "_plot", "_compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pdeinv",
        description=(
            "Recover coefficients of time-dependent PDEs (e.g. the diffusivity kappa of a heat "
            "equation) from measurements, with matrix-free Krylov exponential integrators."
        ),
        epilog="Run `python -m pdeinv SUBCOMMAND --help` for the options of a sub-command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pdeinv.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pdeinv.cli.{name}":
                raise
            continue  # optional sub-command not installed in this checkout
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the sub-command, return its exit status."""
    parser = build_parser()
    # Overrides may come after options (`fit c.yaml --out d k=v`); argparse's
    # positional matching would reject them there, so pick them up here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    if not debug:
        # A failed solve inside jit is reported by JAX's callback logger with a full
        # traceback before the exception arrives; the CLI shows one line instead.
        logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI turns every failure into one line
        if debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1


def _one_line(err: Exception) -> str:
    """The user-facing sentence of an exception (unwrapping JAX runtime errors)."""
    text = str(err).strip()
    # Checks inside jit (equinox) arrive wrapped in an XLA callback traceback.
    match = re.search(r"EquinoxRuntimeError: (.+)", text)
    if match:
        return match.group(1).strip()
    return text.splitlines()[0] if text else type(err).__name__
