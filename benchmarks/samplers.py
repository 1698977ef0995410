"""Sampler overhead: each fixed-step sampler against NFE separately timed calls of its score.

For a score (``--score``: ``mlp``, the residual MLP of 4 blocks of width 256; ``exact``, the
exact score of the 2-component Gaussian mixture ``gaussian_pair(d)``, cheap; or a registry
network such as ``unet_cifar10`` on its images), batch B, K steps:

* ``ratio = t_sampler / (NFE * t_call)``, with ``t_call`` the mean of separately dispatched,
  blocked-on calls of the jitted ``score_fn``, measured in the same round as the sampler
  (``--rounds`` rounds, interleaved: call, sampler, call, sampler, ...); the median of the
  per-round ratios and their range are printed, so machine load that comes and goes moves both
  terms of a ratio together. 1.0 means no overhead; below 1, the scan saves dispatch costs that
  separate calls pay;
* the noise draw's share: a ``lax.scan`` of K steps that only draws the ``(B, *D)`` normals
  Euler-Maruyama draws (threefry) and adds them, against Euler-Maruyama's time;
* our Euler-Maruyama against diffrax's ``Euler`` on the same reverse SDE at equal NFE (vector
  data only; interleaved rounds, median and best ratios).

Run: ``python -m benchmarks.samplers [--score mlp] [--dims 2 64] [--batch 4096] [--steps 1000]
[--methods ...]``; results go in benchmarks/README.md with the command and the load average.
"""

from __future__ import annotations

import argparse
import os
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
IMAGE_SHAPES = {"unet_cifar10": (32, 32, 3), "unet_mnist": (28, 28, 1), "unet_digits": (8, 8, 1),
                "transformer_digits": (8, 8, 1)}


def _wall(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _per_call(score_fn, x, t, calls: int) -> float:
    """Mean time of ``calls`` separately dispatched calls, each blocked on."""
    start = time.perf_counter()
    for _ in range(calls):
        jax.block_until_ready(score_fn(x, t))
    return (time.perf_counter() - start) / calls


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


def noise_only(shape, steps):
    """The noise draws of ``steps`` Euler-Maruyama steps and nothing else."""
    def run(key):
        def body(x, k):
            return x + 1e-3 * jax.random.normal(k, shape, x.dtype), None
        return jax.lax.scan(body, jnp.zeros(shape, jnp.float32), jax.random.split(key, steps))[0]
    return jax.jit(run)


def make_score(kind: str, dim: int, batch: int):
    """``(score_fn, shape, label)`` for ``--score``."""
    sde = sde_lib.VPSDE()
    if kind == "exact":
        gmm = sde_lib.gaussian_pair(jax.random.key(3), dim)
        return gmm.score_fn(sde), (batch, dim), f"exact mixture score, d = {dim}"
    if kind == "mlp":
        model, shape = models.get_model("mlp", hidden=256, num_blocks=4), (batch, dim)
    else:
        model, shape = models.get_model(kind), (batch, *IMAGE_SHAPES[kind])
    x = jnp.zeros(shape, jnp.float32)
    params = jax.jit(lambda k: model.init({"params": k}, x, jnp.ones((batch,)))["params"])(
        jax.random.key(1))
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    label = f"{kind} ({n:,} params), data {shape[1:]}"
    return models.get_score_fn(sde, model, params, "eps"), shape, label


def bench(kind, dim, batch, steps, methods, rounds, calls):
    sde = sde_lib.VPSDE()
    score_fn, shape, label = make_score(kind, dim, batch)
    jitted = jax.jit(score_fn)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    t = jnp.full((batch,), 0.5, jnp.float32)
    jax.block_until_ready(jitted(x, t))
    key = jax.random.key(2)
    runs = {}
    for method in methods:
        run = jax.jit(lambda k, m=method: sde_lib.sample(k, sde, score_fn, shape, method=m,
                                                         num_steps=steps))
        try:
            runs[method] = (run, int(run(key)[1]))  # compiled, and its NFE
        except ValueError as error:  # the method rejects this many steps (reverse diffusion)
            print(f"skipping {method} at {steps} steps: {error}")
    noise = noise_only(shape, steps)
    jax.block_until_ready(noise(key))
    rows, calls_all = [], []
    for method, (run, nfe) in runs.items():
        ratios, walls = [], []
        for _ in range(rounds):
            t_call = _per_call(jitted, x, t, calls)
            wall = _wall(run, key)
            calls_all.append(t_call)
            ratios.append(wall / (nfe * t_call))
            walls.append(wall)
        rows.append((method, nfe, float(np.median(walls)), ratios))
    share = []
    if "euler_maruyama" in runs:
        em = runs["euler_maruyama"][0]
        share = [_wall(noise, key) / _wall(em, key) for _ in range(rounds)]
    load = os.getloadavg()
    print(f"\n## {label}, batch {batch}, {steps} steps; score call {1e3 * np.median(calls_all):.3f}"
          f" ms (median over rounds, range {1e3 * min(calls_all):.3f}-"
          f"{1e3 * max(calls_all):.3f}); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| sampler | NFE | wall (s), median | wall / (NFE x call): median of rounds | range |")
    print("|---|---|---|---|---|")
    for method, nfe, wall, ratios in rows:
        print(f"| {method} | {nfe} | {wall:.3f} | {np.median(ratios):.3f} | "
              f"{min(ratios):.3f}-{max(ratios):.3f} |")
    if share:
        print(f"noise draws alone / Euler-Maruyama: median {np.median(share):.3f} (range "
              f"{min(share):.3f}-{max(share):.3f})")
    if len(shape) == 2 and "euler_maruyama" in runs:
        ours = runs["euler_maruyama"][0]
        theirs = jax.jit(diffrax_euler_maruyama(sde, score_fn, shape, steps))
        jax.block_until_ready(theirs(key))
        pairs = np.array([(_wall(ours, key), _wall(theirs, key)) for _ in range(rounds)])
        print(f"ours / diffrax (Euler-Maruyama, equal NFE): median "
              f"{np.median(pairs[:, 0] / pairs[:, 1]):.3f}, best "
              f"{pairs[:, 0].min() / pairs[:, 1].min():.3f}, per round "
              f"{' '.join(f'{a / b:.3f}' for a, b in pairs)}")
    print(flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score", default="mlp",
                        choices=["mlp", "exact", *sorted(IMAGE_SHAPES)])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64],
                        help="data dimensions (vector scores only)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=list(FIXED), choices=FIXED)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20,
                        help="separately timed score calls per round")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}; jax {jax.__version__}")
    dims = args.dims if args.score in ("mlp", "exact") else [None]
    for dim in dims:
        bench(args.score, dim, args.batch, args.steps, args.methods, args.rounds, args.calls)


if __name__ == "__main__":
    main()
