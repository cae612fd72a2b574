"""Many experiments at once: one batched (vmap) solve vs a Python loop of single solves.

Problem: 2-D heat u_t = div(kappa grad u) on an N x N cell-centred grid (Neumann),
nodal log kappa, E experiments with their own smooth random initial condition and
full-field data at three times; loss = sum_e 0.5 ||u_e(t_i) - d_e,i||^2.

* batched: ``MultiExperimentProblem.misfit`` -- ``jax.vmap`` of
  ``pdeinv.models.simulate`` over the initial states (each experiment keeps its own
  adaptive step control), one jitted function; with several devices also split over
  all of them (``jax.shard_map`` over a 1-D ``Mesh``).  Rows ``auto`` use
  ``expm_multiply``'s default ``batching="auto"`` (on CPU the experiments run one
  after another inside the program, on GPU in lockstep), rows ``lockstep`` force
  ``batching="lockstep"`` (plain ``vmap`` of the whole solver; on CPU what the
  library did before).
* loop: a jitted single-experiment function (compiled once) called E times from
  Python, results summed.

With the default ``checkpoint="trajectory"`` the batched solves share the
policy's 8 MiB of trajectory bases (a single solve has it to itself), so the
printed agreement of the gradients is to the trajectory check's tolerance
(``tol / 100``), not to rounding.

Times are the best of ``--repeats`` runs after a warm-up (compile excluded), the
batched and the loop runs interleaved; next to the wall time the process CPU time
of the same run (``time.process_time``, all threads), which a shared machine
disturbs less.  The device is whatever JAX picks (CPU here; a GPU runs the same
script unchanged).

Usage::

    python benchmarks/batch.py                    # 64 experiments, 32^2 grid
    python benchmarks/batch.py --grid 64 --experiments 16
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/batch.py
"""

from __future__ import annotations

import argparse
import os

import jax

import pdeinv

jax.config.update("jax_enable_x64", True)  # a script may; the library never does
pdeinv.limit_blas_threads()  # see pdeinv/_threads.py

import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import best_time, cpu_name  # noqa: E402  (benchmarks/ is the script's path)

from pdeinv import inverse, models  # noqa: E402
from pdeinv.discretize import grid  # noqa: E402
from pdeinv.inverse._experiments import MultiExperimentProblem  # noqa: E402
from pdeinv.inverse._sharding import experiment_sharding  # noqa: E402


def machine() -> str:
    device = jax.devices()[0]
    cpu = cpu_name()
    return (
        f"{cpu}, {os.cpu_count()} cores visible, load average {os.getloadavg()[0]:.1f}; "
        f"JAX {jax.__version__} on {len(jax.devices())} x {device.platform} "
        f"({getattr(device, 'device_kind', '')})"
    )


def best_interleaved(first, second, repeats):
    """``((wall, cpu), (wall, cpu))`` in seconds, each the best of ``repeats`` warm calls.

    The two functions run alternately, so that both see the same machine state.
    """
    jax.block_until_ready(first())
    jax.block_until_ready(second())
    best = [[np.inf, np.inf], [np.inf, np.inf]]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = [min(best[i][0], wall), min(best[i][1], cpu)]
    return tuple(map(tuple, best))


def build(
    n, num_experiments, dtype, tol, max_steps, sharding=None, batching="auto", checkpoint=None
):
    space = grid((n, n))
    x, y = space.points.T
    true_log_kappa = np.log(1.0 + 2.0 * ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.15**2))
    model = models.heat_fd(space, jnp.asarray(true_log_kappa, dtype), jnp.zeros(n * n, dtype))
    initial = jnp.stack(
        [models.smooth_random_field(space, e).astype(dtype) for e in range(num_experiments)]
    )
    times = np.array([0.002, 0.005, 0.01])
    solver = {"tol": tol, "krylov_dim": 30, "max_steps": max_steps}
    from pdeinv.inverse._experiments import simulate_experiments

    data = np.asarray(
        simulate_experiments(model, model.params, jnp.asarray(times, dtype), initial, **solver)
    )
    solver = {**solver, "batching": batching}
    if checkpoint is not None:
        solver["checkpoint"] = checkpoint
    parameters = inverse.ParameterMap(
        inverse.NodalField(space.num_nodes), "log_kappa", dict(model.params)
    )
    problem = MultiExperimentProblem(
        model=model, times=times, parameters=parameters, observation=inverse.FullField(space),
        initial_states=initial, data=data, sigma=1.0,
        regularizer=inverse.make_regularizer("none", space), solver=solver, sharding=sharding,
        batch_size=num_experiments,  # one vmap (the CPU default would be one at a time)
    )  # fmt: skip
    return model, problem, initial, data, times, solver


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=32, help="cells per axis (default 32)")
    parser.add_argument("--experiments", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument(
        "--checkpoint",
        choices=("trajectory", "states", "bases"),
        default="trajectory",
        help="expm_multiply's checkpoint policy (default trajectory, the library's)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=500,
        help="expm_multiply step budget (checkpoint buffer size; default 500, the library's)",
    )
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    tol = 1e-8 if args.dtype == "float64" else 1e-5
    model, problem, initial, data, times, solver = build(
        args.grid, args.experiments, dtype, tol, args.max_steps, checkpoint=args.checkpoint
    )
    x = jnp.zeros(model.space.num_nodes, dtype)  # start guess: kappa = 1
    times_j = jnp.asarray(times, dtype)

    def single(m, u0, d):
        u = models.simulate(model, {"log_kappa": m}, times_j, u0=u0, **solver)
        return 0.5 * jnp.sum((u - d) ** 2)

    single_value = jax.jit(single)
    single_grad = jax.jit(jax.value_and_grad(single))
    batched_value = jax.jit(problem.misfit)
    batched_grad = jax.jit(jax.value_and_grad(problem.misfit))
    data_j = jnp.asarray(data)

    def loop_value():
        return sum(single_value(x, initial[e], data_j[e]) for e in range(len(initial)))

    def loop_grad():
        total, grad = 0.0, jnp.zeros_like(x)
        for e in range(len(initial)):
            v, g = single_grad(x, initial[e], data_j[e])
            total, grad = total + v, grad + g
        return total, grad

    # Same numbers either way (checks the benchmark measures the same work).
    (vb, gb), (vl, gl) = batched_grad(x), loop_grad()
    agree_value = abs(float(vb - vl)) / abs(float(vl))
    agree_grad = float(jnp.linalg.norm(gb - gl) / jnp.linalg.norm(gl))

    _, lockstep, *_ = build(
        args.grid, args.experiments, dtype, tol, args.max_steps, batching="lockstep",
        checkpoint=args.checkpoint,
    )  # fmt: skip
    lockstep_value = jax.jit(lockstep.misfit)
    lockstep_grad = jax.jit(jax.value_and_grad(lockstep.misfit))

    rows = []
    for label, batched, loop in (
        ("value", lambda: batched_value(x), loop_value),
        ("value + gradient", lambda: batched_grad(x), loop_grad),
        ("value, lockstep", lambda: lockstep_value(x), loop_value),
        ("value + gradient, lockstep", lambda: lockstep_grad(x), loop_grad),
    ):
        tb, tl = best_interleaved(batched, loop, args.repeats)
        rows.append((label, "1", tb, tl))
    if len(jax.devices()) > 1:
        _, sharded, *_ = build(
            args.grid, args.experiments, dtype, tol, args.max_steps,
            sharding=experiment_sharding(), checkpoint=args.checkpoint,
        )  # fmt: skip
        sharded_value = jax.jit(sharded.misfit)
        sharded_grad = jax.jit(jax.value_and_grad(sharded.misfit))
        count = str(len(jax.devices()))

        def timed(fn):
            cpu = time.process_time()
            wall = best_time(fn, args.repeats)
            return wall, (time.process_time() - cpu) / (args.repeats + 1)  # mean, not best

        rows.append(("value", count, timed(lambda: sharded_value(x)), None))
        rows.append(("value + gradient", count, timed(lambda: sharded_grad(x)), None))

    print(
        f"### {args.experiments} experiments batched vs a Python loop "
        f"(2-D heat {args.grid}x{args.grid}, {args.dtype}, tol {tol:g}, 3 output times, "
        f"max_steps {args.max_steps}, checkpoint {args.checkpoint})\n"
    )
    print(f"Machine: {machine()}.\n")
    print(
        "| evaluation | devices | batched (vmap) | Python loop | speed-up "
        "| CPU time batched / loop |"
    )
    print("|---|---|---|---|---|---|")
    # Speed-up against the loop run interleaved with the row's own batched runs;
    # sharded rows against the first loop of the same evaluation.
    loop_times = {}
    for label, _, _, tl in rows:
        if tl is not None:
            loop_times.setdefault(label.split(",")[0], tl)
    for label, devices, (tb, cb), tl in rows:
        reference, _ = tl if tl is not None else loop_times[label.split(",")[0]]
        loop_text = f"{tl[0] * 1e3:.0f} ms" if tl is not None else "—"
        cpu_text = (
            f"{cb * 1e3:.0f} / {tl[1] * 1e3:.0f} ms" if tl is not None else f"{cb * 1e3:.0f} ms"
        )
        print(
            f"| {label} | {devices} | {tb * 1e3:.0f} ms | {loop_text} | {reference / tb:.1f}x "
            f"| {cpu_text} |"
        )
    print(
        f"\nBatched and looped results agree: value {agree_value:.1e}, "
        f"gradient {agree_grad:.1e} (relative)."
    )


if __name__ == "__main__":
    main()
