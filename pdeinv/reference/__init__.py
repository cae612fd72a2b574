"""pdeinv.reference (see docs/interfaces.md)."""
