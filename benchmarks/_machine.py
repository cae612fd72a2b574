"""What the benchmark tables say about the machine they ran on."""

from __future__ import annotations

import os
import platform
import time


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def best_time(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` warm calls of ``fn`` (after one warm-up).

    Best of, not median: the machines these run on are often shared, and the
    fastest run is the least disturbed measurement of the same work.
    """
    return best_times_interleaved([fn], repeats)[0]


def best_times_interleaved(fns, repeats: int) -> list[float]:
    """Seconds of the fastest of ``repeats`` warm calls of each of ``fns``, taken in turn.

    Round-robin rather than one function after the other: a burst of load on a
    shared machine then slows every row's worst runs, not one row's best, so the
    ratios between rows measured in one run hold.
    """
    import jax  # here, so that importing this module never initialises JAX early

    for fn in fns:
        jax.block_until_ready(fn())  # compile / warm up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def machine_line() -> str:
    """CPU, visible cores, load average and the JAX device: one line for a table's header."""
    import jax  # here, so that importing this module never initialises JAX early

    device = jax.devices()[0]
    return (
        f"{cpu_name()}, {os.cpu_count()} cores visible, load average "
        f"{os.getloadavg()[0]:.1f}; JAX {jax.__version__} on {device.platform} "
        f"({getattr(device, 'device_kind', '')})"
    )
