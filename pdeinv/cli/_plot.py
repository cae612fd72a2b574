"""``python -m pdeinv plot RUN_DIR``: (re)draw the figures of a finished run."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="(re)draw kappa.png, convergence.png and fit.png of a run folder",
        description="Redraw the figures of RUN_DIR from its result.npz.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by fit or simulate")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..report import draw_figures

    for path in draw_figures(args.run_dir):
        print(path)
    return 0
