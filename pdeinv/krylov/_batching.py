"""How ``vmap`` runs a solver's adaptive loops: one element after another, or in lockstep.

The integrator's forward sweep, the tangent's forward solve and its adjoint
sweeps are adaptive ``while_loop``\\ s.  Batched by plain ``vmap`` they run in
lockstep: every loop with a batched predicate runs until its slowest element is
done (the finished ones masked, not stopped) and both branches of every ``cond``
run.  That fills a GPU, where a kernel launch costs more than its arithmetic;
on a CPU it only adds work (measured in docs/scale.md#batched-vs-a-python-loop).

:func:`per_element` gives a function a batching rule that runs a batch as a
:func:`jax.lax.map` over unbatched calls (``"sequential"``), as ``vmap``
(``"lockstep"``), or the one per platform (``"auto"``: sequential on CPU,
lockstep elsewhere, chosen at lowering by :func:`jax.lax.platform_dependent`).
The integrator wraps its sweeps (``pdeinv/expm/_forward.py``, ``_rules.py``),
:func:`~pdeinv.krylov._common.one_at_a_time_on_cpu` the small LAPACK calls.
First derivatives never differentiate the sweeps (the integrator's own rules
do), but ``jax.jvp``/``jax.linearize`` of ``jax.grad`` (Hessian-vector
products) differentiate them in forward mode, so the wrapper keeps forward
mode by differentiating the function itself (under ``vmap`` those tangents run
in lockstep).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax import lax

BATCHINGS = ("auto", "sequential", "lockstep")


def _split(mask, tree):
    """``(batched, shared)``: ``tree``'s leaves where ``mask`` is True / False (None elsewhere)."""
    batched = jax.tree.map(lambda m, x: x if m else None, mask, tree)
    shared = jax.tree.map(lambda m, x: None if m else x, mask, tree)
    return batched, shared


def _merge(mask, batched, shared):
    return jax.tree.map(lambda m, b, s: b if m else s, mask, batched, shared)


def per_element(
    fn: Callable, batching: str, for_batch: Callable[[int], Callable] | None = None
) -> Callable:
    """``fn`` (arrays in, arrays out) whose ``vmap`` follows the ``batching`` policy.

    Parameters
    ----------
    fn
        A function of pytrees of arrays returning a pytree of arrays; it must
        not close over traced values (the integrator passes every array as an
        argument, see ``_expm._call``).
    batching
        ``"sequential"``: under ``vmap`` the batch runs as a ``lax.map`` over
        unbatched calls, inside the one compiled program; arguments that are
        not batched are shared, not copied.  ``"lockstep"``: plain ``vmap``.
        ``"auto"``: sequential when lowered for CPU, lockstep for any other
        platform.
    for_batch
        ``for_batch(size)``: the function each element of a batch of ``size``
        runs in place of ``fn`` under ``"sequential"`` and ``"auto"`` (same
        inputs; its outputs may be smaller arrays than ``fn``'s, e.g. a
        recording buffer whose budget the batch shares).  Default: ``fn``.

    Returns
    -------
    Callable
        Same values as ``fn``; differentiable in forward mode (``jax.jvp``,
        ``jax.linearize``; under ``vmap`` the tangent runs in lockstep).  Reverse mode
        through it is not supported (nor needed: the sweeps are loops of
        unbounded length that only the integrator's own rules differentiate).
    """
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
    if batching == "lockstep":
        return fn

    batched_fn = jax.custom_batching.custom_vmap(fn)

    @batched_fn.def_vmap
    def _rule(axis_size, in_batched, *args):
        mapped, shared = _split(in_batched, list(args))
        element, element_fn = batched_fn, fn
        if for_batch is not None:
            element_fn = for_batch(axis_size)
            element = per_element(element_fn, batching)

        def one_after_another(mapped):
            # The wrapped function, not fn: a nested vmap of the body (vmap of
            # vmap) comes back through this rule.
            return lax.map(lambda m: element(*_merge(in_batched, m, shared)), mapped)

        def lockstep(mapped):
            return jax.vmap(lambda m: element_fn(*_merge(in_batched, m, shared)))(mapped)

        if batching == "sequential":
            out = one_after_another(mapped)
        else:
            out = lax.platform_dependent(mapped, cpu=one_after_another, default=lockstep)
        return out, jax.tree.map(lambda _: True, out)

    # custom_vmap has a JVP rule but none for partial evaluation: under
    # jax.linearize its primal outputs would come out unknown.  So forward mode
    # differentiates ``fn`` itself (plain JAX, which partial evaluation knows).
    # Only second derivatives of the integrator get here (Hessian-vector
    # products); batched, their tangent sweeps run in lockstep.  (A tangent
    # that recomputed the primal in a second per-element function gave wrong
    # Hessians: tests/expm/test_forward_mode.py::test_hessian_of_a_stiff_problem...)
    @jax.custom_jvp
    def differentiable(*args):
        return batched_fn(*args)

    @differentiable.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(fn, primals, tangents)

    return differentiable
