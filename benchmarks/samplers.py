"""Sampler overhead: each fixed-step sampler against NFE separately timed calls of the score.

For an MLP score model (4 residual blocks of width 256) on d-dimensional data, batch B, K steps:

* ``ratio = t_sampler / (NFE * t_call)``, ``t_call`` the median over K separately timed calls
  of the jitted ``score_fn`` (each blocked on); goal <= 1.10 (1.0 means no overhead at all);
* our Euler-Maruyama against diffrax's ``Euler`` on the same reverse SDE at equal NFE
  (interleaved, 5 rounds; the median and best ratios are printed).

Everything runs in one process, side by side: the per-call time is measured before and after the
samplers and averaged. Run: ``python -m benchmarks.samplers [--dims 2 64] [--batch 4096]
[--steps 1000]``; results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import lineax
import numpy as np

import models
import sde_lib

FIXED = ("euler_maruyama", "reverse_diffusion", "ddpm_ancestral", "ddim", "pf_ode_euler",
         "pf_ode_heun", "pc", "dpm_solver_pp", "dpm_solver_2s", "unipc", "edm_heun",
         "edm_stochastic")


def _time(fn, *args, repeats=1):
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best.append(time.perf_counter() - start)
    return min(best)


def _per_call(score_fn, x, t, calls):
    jax.block_until_ready(score_fn(x, t))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(score_fn(x, t))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def diffrax_euler_maruyama(sde, score_fn, shape, num_steps):
    """The reverse SDE in forward time s = T - t, solved by diffrax's Euler (Euler-Maruyama)."""
    rsde = sde.reverse(score_fn)
    B = shape[0]

    def drift(s, x, args):
        return -rsde.sde(x, jnp.full((B,), sde.T - s, x.dtype))[0]

    def diffusion(s, x, args):
        g = sde.diffusion_coeff(jnp.asarray(sde.T - s, x.dtype))
        return lineax.DiagonalLinearOperator(jnp.full(shape, g, x.dtype))

    def run(key):
        key_prior, key_bm = jax.random.split(key)
        bm = diffrax.UnsafeBrownianPath(shape=shape, key=key_bm)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0=0.0, t1=sde.T,
                                  dt0=sde.T / num_steps, y0=sde.prior_sampling(key_prior, shape),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=num_steps + 1,
                                  adjoint=diffrax.ForwardMode())
        return sol.ys[-1]

    return run


def bench_dim(dim, batch, steps):
    sde = sde_lib.VPSDE()
    model = models.get_model("mlp", hidden=256, num_blocks=4)
    x = jax.random.normal(jax.random.key(0), (batch, dim), jnp.float32)
    t = jnp.full((batch,), 0.5, jnp.float32)
    params = model.init(jax.random.key(1), x, t)["params"]
    score_fn = models.get_score_fn(sde, model, params, "eps")
    jitted = jax.jit(score_fn)
    before = _per_call(jitted, x, t, steps)
    rows = []
    key = jax.random.key(2)
    for method in FIXED:
        run = jax.jit(lambda k, m=method: sde_lib.sample(k, sde, score_fn, (batch, dim),
                                                         method=m, num_steps=steps))
        try:
            nfe = int(run(key)[1])
        except ValueError as error:  # the method rejects this many steps (reverse diffusion)
            print(f"skipping {method} at {steps} steps: {error}")
            continue
        rows.append((method, nfe, _time(run, key)))
    # head to head: our Euler-Maruyama and diffrax's, interleaved, 5 rounds
    ours = jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, (batch, dim),
                                            method="euler_maruyama", num_steps=steps)[0])
    theirs = jax.jit(diffrax_euler_maruyama(sde, score_fn, (batch, dim), steps))
    pairs = np.array([(_time(ours, key), _time(theirs, key)) for _ in range(5)])
    ours_em, t_diffrax = np.median(pairs, axis=0)
    after = _per_call(jitted, x, t, steps)
    t_call = 0.5 * (before + after)
    print(f"\n## d = {dim}, batch {batch}, {steps} steps; score_fn call {1e3 * t_call:.2f} ms "
          f"(before {1e3 * before:.2f}, after {1e3 * after:.2f})")
    print("| sampler | NFE | wall (s) | wall / (NFE x call) |")
    print("|---|---|---|---|")
    for method, nfe, wall in rows:
        print(f"| {method} | {nfe} | {wall:.2f} | {wall / (nfe * t_call):.3f} |")
    print(f"| euler_maruyama, median of 5 | {steps} | {ours_em:.2f} | "
          f"{ours_em / (steps * t_call):.3f} |")
    print(f"| diffrax Euler (reverse SDE), median of 5 | {steps} | {t_diffrax:.2f} | "
          f"{t_diffrax / (steps * t_call):.3f} |")
    print(f"ours / diffrax (Euler-Maruyama, equal NFE): median {ours_em / t_diffrax:.3f}, "
          f"best {pairs[:, 0].min() / pairs[:, 1].min():.3f}, per round "
          f"{' '.join(f'{a / b:.3f}' for a, b in pairs)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    for dim in args.dims:
        bench_dim(dim, args.batch, args.steps)


if __name__ == "__main__":
    main()
