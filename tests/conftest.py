"""Test configuration: float64 everywhere (the library itself never flips JAX flags)."""

import gc
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

import pdeinv  # noqa: E402

jax.config.update("jax_enable_x64", True)
# One BLAS thread, as the CLI sets it (see pdeinv/_threads.py).
pdeinv.limit_blas_threads(1)

# The default suite's time is mostly XLA:CPU compiling solver programs for small
# problems (docs/development.md, "Suite time"), and much of a compile is LLVM
# optimising machine code that then runs for milliseconds.  The default run
# (``-m 'not slow'``) therefore compiles with LLVM's optimisations off: the same
# HLO programs and the same IEEE arithmetic (XLA:CPU uses no fast-math either way),
# 10-40 % less time for compile-bound tests (measured, noisily, on the shared VM
# with tests/expm/test_expm.py and tests/cli/test_cli.py).  Runs that select slow
# tests keep XLA's default level, so the timing acceptance tests (-m slow) measure
# what users get.  An explicit ``--xla_backend_optimization_level`` in XLA_FLAGS
# always wins.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    flags = os.environ.get("XLA_FLAGS", "")
    markexpr = config.getoption("markexpr", "") or ""
    if "not slow" in markexpr and "xla_backend_optimization_level" not in flags:
        # Before the first computation: XLA reads the flags when the backend starts.
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAG}".strip()


@pytest.fixture
def write_file(tmp_path):
    """``write_file(text, name="run.yaml") -> Path``: a file holding ``text`` in ``tmp_path``."""

    def write(text: str, name: str = "run.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# A config that runs in seconds: 8 x 8 heat, two output times, 4 iterations.
TINY_CONFIG = """
seed: 1
model: {pde: heat, grid: [8, 8], initial_condition: bumps}
truth: {field: inclusion, radius: 0.25}
observations: {times: [0.005, 0.01]}
noise: {level: 0.01}
regularization: {kind: h1, weight: 1.0}
optimizer: {max_iter: 4}
"""


@pytest.fixture
def tiny(write_file):
    """Path of ``tiny.yaml`` holding :data:`TINY_CONFIG` (the run name is ``tiny``)."""
    return write_file(TINY_CONFIG, "tiny.yaml")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled executables after each test module.

    Every XLA:CPU executable keeps several memory mappings for its JIT code.
    The whole suite compiles thousands of programs in one process (tests/expm
    alone adds ~25k mappings), which reached Linux's default
    ``vm.max_map_count`` (65530): the next compile then failed, and unwinding
    that failure through the JIT-registered frames crashed the interpreter
    (SIGSEGV in ``_Unwind_Find_FDE``, seen in tests/test_examples.py).  Clearing
    the caches per module keeps the count near its baseline (~1k).
    """
    yield
    jax.clear_caches()
    gc.collect()
