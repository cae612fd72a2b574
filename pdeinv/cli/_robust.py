"""What keeps a long ``fit`` safe: signals, periodic checkpoints, resume, a memory plan.

* :class:`StopOnSignal` turns the first SIGINT/SIGTERM into a request that the
  optimiser ends after the current evaluation (a second one aborts at once).
* :class:`Checkpointer` rewrites ``result.npz`` and ``metrics.json`` (status
  ``running``) at most every ``output.checkpoint_every_s`` seconds.
* :func:`previous_run` reads what ``fit --resume`` continues from.
* :func:`planned_gradient_memory` and :func:`check_memory` estimate the memory of
  one gradient before the fit and refuse plans above the available memory.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np

from .. import report
from ._config import ConfigError
from ._sections import SolverSection

# Exit status of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class StopOnSignal:
    """Context manager: the first SIGINT/SIGTERM sets :attr:`requested`; a second aborts.

    ``stop()`` (the object itself is callable) is what the optimiser polls
    before every evaluation.  Outside the main thread it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, message=None):
        self.requested = None  # name of the first signal received
        self.message = message
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt  # second signal: abort now
        self.requested = signal.Signals(signum).name
        if self.message is not None:
            self.message(
                f"{self.requested}: stopping after the current evaluation and writing the "
                "run folder (send it again to abort without writing)"
            )

    def __enter__(self):
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def join_histories(previous: dict | None, new: dict) -> dict:
    """History of a resumed run: ``previous`` rows, then ``new`` without its row 0.

    Row 0 of ``new`` is the resume point, the last row of ``previous``;
    iteration numbers and elapsed times continue from there.
    """
    if not previous:
        return {k: np.asarray(v, dtype=float) for k, v in new.items()}
    out = {}
    rows = len(next(iter(previous.values())))
    for key, values in new.items():
        # A column the previous run did not record (an older version) reads as zeros.
        old = np.asarray(previous.get(key, np.zeros(rows)), dtype=float)
        values = np.asarray(values, dtype=float)[1:]
        if key in ("iteration", "elapsed", "pde_solves") and old.size:
            values = values + old[-1]
        out[key] = np.concatenate([old, values])
    return out


class Checkpointer:
    """``checkpoint(x, history)`` hook of :func:`pdeinv.inverse.minimize` for the CLI.

    Writes ``result.npz`` (``x``: best iterate so far, ``history_*``) and
    ``metrics.json`` (``status: running``) when ``every_s`` seconds have passed
    since the last write (or the start); ``every_s = 0`` writes every iteration.
    Both files are replaced atomically, so a ``kill -9`` leaves the previous
    checkpoint intact.
    """

    def __init__(self, folder, every_s: float, *, previous_history=None, base_metrics=None):
        self.folder = Path(folder)
        self.every_s = float(every_s)
        self.previous_history = previous_history
        self.base_metrics = dict(base_metrics or {})
        self.last = time.monotonic()
        self.count = 0

    def __call__(self, x, history: dict) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.write(x, history)
        self.last = time.monotonic()

    def write(self, x, history: dict) -> None:
        joined = join_histories(self.previous_history, history)
        arrays = {"x": np.asarray(x), **{f"history_{k}": v for k, v in joined.items()}}
        report.write_result(self.folder, arrays)
        objective = joined["objective"]
        metrics = {
            **self.base_metrics,
            "status": "running",
            "iterations": int(joined["iteration"][-1]) if joined["iteration"].size else 0,
            "objective": float(np.nanmin(objective)) if objective.size else None,
            "checkpoint_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        report.write_metrics(self.folder, metrics)
        self.count += 1


def previous_run(folder) -> tuple[Path, dict, dict]:
    """``(config.yaml path, result arrays, metrics)`` of a run folder to resume."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--resume: run folder not found: {folder}")
    config = folder / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"--resume: {folder} holds no config.yaml (not a run folder)")
    try:
        arrays = report.read_result(folder)
    except FileNotFoundError:
        raise ConfigError(
            f"--resume: {folder} holds no result.npz yet (stopped before the first "
            "checkpoint); start the fit again instead"
        ) from None
    if "x" not in arrays:
        raise ConfigError(f"--resume: {folder}/result.npz has no iterate 'x'")
    try:
        metrics = report.read_metrics(folder)
    except (FileNotFoundError, ValueError):
        metrics = {}
    return config, arrays, metrics


def history_of(arrays: dict) -> dict:
    """The ``history_*`` arrays of a result file, keyed without the prefix."""
    return {k[len("history_") :]: v for k, v in arrays.items() if k.startswith("history_")}


# --- memory ---------------------------------------------------------------------------


def planned_gradient_memory(
    solver: SolverSection, precision: str, num_states: int, num_times: int, batch: int
) -> dict:
    """Bytes that one gradient evaluation keeps per solve, and for ``batch`` solves at once.

    The checkpoint buffers come from the policy object that
    :func:`pdeinv.expm_multiply` itself plans with (``planned_bytes`` of
    ``pdeinv/expm/_checkpoint.py``): the kept step-start states (32, at most
    ``solver.max_steps``) and the replay segment, the stored trajectory bases
    (at most 8 MiB, shared by a batch), every Krylov basis for ``solver.checkpoint = bases``
    (``max_steps * krylov_dim`` states).  Added here: the forward and backward
    Krylov bases and the outputs; items of ``precision`` (``"float64"`` or
    ``"float32"``).  The trajectory bases are counted as for a method that
    stores them: an upper bound for the wave's skew method, which stores none
    but gives its adjoint a fifth more Krylov vectors
    (``pdeinv/expm/_config.py``, ``adjoint_krylov_dim``).
    """
    from ..expm._checkpoint import checkpoint_policy

    itemsize = 8 if precision == "float64" else 4
    n = int(num_states)
    k = min(int(solver.krylov_dim), n)
    max_steps = int(solver.max_steps)
    buffers = checkpoint_policy(solver.checkpoint).planned_bytes(
        n=n, k=k, max_steps=max_steps, checkpoints=None, itemsize=itemsize, batch=batch
    )
    working = 2 * (k + 1) * n + 2 * num_times * n
    per_solve = buffers["states"] + buffers["policy"] + itemsize * (working + 2 * max_steps)
    return {
        "per_solve_bytes": int(per_solve),
        "batch": int(batch),
        "total_bytes": int(per_solve * batch),
        "states_bytes": int(buffers["states"] * batch),
    }


def available_memory_bytes() -> int | None:
    """Memory this run may still use: ``MemAvailable`` of /proc/meminfo (CPU) or the
    free memory of the first accelerator; ``None`` when unknown."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = getattr(device, "memory_stats", lambda: None)() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover


def check_memory(solver: SolverSection, plan: dict, available: int | None) -> str:
    """The line to print about the plan; ConfigError when it exceeds ``available``
    (the message names ``solver.max_steps``)."""
    line = (
        f"planned memory of one gradient: {format_bytes(plan['total_bytes'])} "
        f"({plan['batch']} solve(s) at once x {format_bytes(plan['per_solve_bytes'])})"
    )
    if available is not None:
        line += f"; available {format_bytes(available)}"
        if plan["total_bytes"] > available:
            raise ConfigError(
                f"the planned memory of one gradient, {format_bytes(plan['total_bytes'])} "
                f"({plan['batch']} solve(s) at once), exceeds the available "
                f"{format_bytes(available)}; lower experiments.batch_size "
                f"(now {plan['batch']}) or solver.max_steps "
                f"(now {solver.max_steps}), or use solver.checkpoint = states"
            )
    return line
