"""pdeinv.inverse (see docs/interfaces.md)."""
