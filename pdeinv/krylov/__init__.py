"""pdeinv.krylov (see docs/interfaces.md)."""
