"""``python -m pdeinv``: argument parsing and dispatch to the sub-commands."""

from __future__ import annotations

import argparse
import importlib
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
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI turns every failure into one line
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
