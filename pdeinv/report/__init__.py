"""pdeinv.report (see docs/interfaces.md)."""
