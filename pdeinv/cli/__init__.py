"""Command line interface (``python -m pdeinv``)."""


def main(argv=None) -> int:  # replaced by the CLI implementation
    from ._main import main as _main

    return _main(argv)
