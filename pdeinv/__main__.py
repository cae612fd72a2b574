"""``python -m pdeinv`` entry point."""

from pdeinv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
