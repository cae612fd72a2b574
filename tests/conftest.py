"""Test configuration: float64 everywhere (the library itself never flips JAX flags)."""

import gc
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


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
