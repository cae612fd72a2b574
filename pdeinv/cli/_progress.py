"""Rendering optimiser progress: one live line on a terminal, log lines otherwise."""

from __future__ import annotations

import sys

from ..inverse import IterationInfo


class Progress:
    """Callback for :func:`pdeinv.inverse.minimize` that prints iteration lines.

    On a TTY the line is rewritten in place (``\\r``); otherwise every iteration
    is a plain log line.  ``quiet`` prints nothing.
    """

    def __init__(self, stream=None, *, quiet: bool = False):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open_line = False

    def __call__(self, info: IterationInfo) -> None:
        if self.quiet:
            return
        text = (
            f"iter {info.iteration:4d}  objective {info.objective:.6e}  "
            f"misfit {info.misfit:.4e}  |grad| {info.grad_norm:.3e}  "
            f"step {info.step:.2e}  {info.elapsed:7.2f} s"
        )
        if info.cg_iterations:  # a Newton-CG step: its Hessian-vector products
            text += f"  cg {info.cg_iterations:3d}"
        if info.pde_solves:
            text += f"  solves {info.pde_solves}"
        if self.live:
            self.stream.write("\r" + text + "\x1b[K")
            self._open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A status line (always on its own line)."""
        if self.quiet:
            return
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
