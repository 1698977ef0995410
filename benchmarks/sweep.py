"""NFE sweeps: compilations and wall time, one program per ``num_steps`` against one for all.

For each sampler, a sweep over NFE budgets (default 10, 20, 50, 100, 200, 500) run two ways:
``jax.jit(sample)`` compiled for each ``num_steps`` (what a loop over ``sample`` does) and
``sde_lib.Sweep`` (one program for every ``num_steps`` up to the largest). Printed per sweep: the
XLA compilations of programs over the steps (not the host grid's single element-wise ops, which
are compiled beforehand for both), the seconds spent compiling them (jax.monitoring's
backend-compile durations), the sweep's wall time from cold and warm (median of ``--rounds``
rounds, the two ways interleaved in each), cold / warm, and the second way's warm time over the
first's (median and range of the per-round ratios).
The same for the fixed-step likelihood (Heun, 8 points): ``max_steps = num_steps`` pads nothing,
so each ``num_steps`` is a new program, as before the padded grid; the default ``max_steps``
shares one.

Run: ``python -m benchmarks.sweep [--score mlp|exact] [--dim 64] [--batch 256]
[--nfe 10 20 50 100 200 500] [--methods ...]``; results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import models
import sde_lib

_EVENT = "/jax/core/compile/backend_compile_duration"
_PROGRAMS = []  # (fun_name, seconds) of every compilation


def _listener(event, duration, **kwargs):
    if event == _EVENT:
        _PROGRAMS.append((kwargs.get("fun_name", "?"), duration))


def _is_program(name: str) -> bool:
    """A compiled program over steps (the samplers' and likelihood's), not one primitive."""
    return any(s in name for s in ("lambda", "_sweep_program", "_log_likelihood"))


def _run(calls) -> float:
    start = time.perf_counter()
    for call in calls:
        jax.block_until_ready(call())
    return time.perf_counter() - start


def _cold(calls):
    """Runs ``calls`` (thunks) from cold: (programs compiled, compile s, wall s)."""
    start_events = len(_PROGRAMS)
    cold = _run(calls)
    programs = [s for name, s in _PROGRAMS[start_events:] if _is_program(name)]
    return len(programs), sum(programs), cold


def _compare(label, ways, rounds):
    """Both ways cold, then ``rounds`` interleaved warm runs of each; a row per way, the second
    with its warm time's ratio to the first's (median of the per-round ratios, and range)."""
    cold = {name: _cold(calls) for name, calls in ways}
    warm = {name: [] for name, _ in ways}
    for _ in range(rounds):
        for name, calls in ways:
            warm[name].append(_run(calls))
    (first, _), (second, _) = ways
    ratios = sorted(b / a for a, b in zip(warm[first], warm[second], strict=True))
    for name, _ in ways:
        n, compile_s, cold_s = cold[name]
        w = statistics.median(warm[name])
        ratio = (f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"
                 if name == second else "1")
        print(f"| {label} | {name} | {n} | {compile_s:.2f} | {cold_s:.2f} | {w:.3f} | "
              f"{cold_s / w:.1f} | {ratio} |", flush=True)


def _score(kind, sde, dim):
    if kind == "exact":
        return sde_lib.gaussian_pair(jax.random.key(0), dim).score_fn(sde)
    model = models.get_model("mlp")
    params = model.init(jax.random.key(0), jnp.zeros((1, dim)), jnp.zeros(1))["params"]
    return models.get_score_fn(sde, model, params)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score", choices=("mlp", "exact"), default="mlp")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    parser.add_argument("--methods", nargs="+",
                        default=["euler_maruyama", "ddim", "pf_ode_heun", "dpm_solver_pp"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-likelihood", action="store_true")
    args = parser.parse_args()
    jax.monitoring.register_event_duration_secs_listener(_listener)
    sde = sde_lib.VPSDE()
    score_fn = _score(args.score, sde, args.dim)
    shape = (args.batch, args.dim)
    print(f"score {args.score}, d = {args.dim}, batch {args.batch}, NFE budgets {args.nfe}; "
          f"{os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| sampler | way | programs compiled | compiling (s) | sweep cold (s) | warm (s), "
          "median | cold / warm | warm / first way's, median (range) |")
    print("|---|---|---|---|---|---|---|---|")
    rng = jax.random.key(1)
    for method in args.methods:
        sampler = sde_lib.sampling.get_sampler(method)
        ks = [sampler.num_steps_for(nfe) for nfe in args.nfe]
        for k in ks:  # the host grids' element-wise ops, compiled for both ways alike
            sampler.coefficients(sde, k, 1e-3, sampler.check_options({}))
        per_k = [jax.jit(lambda r, k=k, m=method: sde_lib.sample(r, sde, score_fn, shape, m,
                                                                 num_steps=k)[0]) for k in ks]
        sweep = sde_lib.Sweep(sde, shape, method, max_num_steps=max(ks))
        _compare(method, [("jit(sample) per num_steps", [lambda f=f: f(rng) for f in per_k]),
                          ("Sweep", [lambda k=k, s=sweep: s(rng, score_fn, k)[0] for k in ks])],
                 args.rounds)
    if args.no_likelihood:
        return
    x = jax.random.normal(jax.random.key(2), (8, args.dim))
    ks = [max(1, nfe // 2) for nfe in args.nfe]

    def likelihood(k, max_steps):
        return sde_lib.log_likelihood(rng, sde, score_fn, x, solver="heun", num_steps=k,
                                      max_steps=max_steps)[0]

    for k in ks:  # the host grids
        sde_lib.sampling.evaluation_times("logsnr", k + 1, sde, 1e-5)
    _compare("likelihood, heun",
             [("grid of num_steps (max_steps = num_steps)",
               [lambda k=k: likelihood(k, k) for k in ks]),
              ("padded grid (max_steps = 4096)", [lambda k=k: likelihood(k, 4096) for k in ks])],
             args.rounds)


if __name__ == "__main__":
    main()
