"""DPS's normalised step against plain sampling: what the guidance costs in score evaluations.

For a registry network (``--network``, default ``unet_digits``; random weights) on its image
shape, batch B, K ``ddpm_ancestral`` steps and 2x super-resolution's observation:

* ``plain``: ``sde_lib.sample`` (one network forward per step);
* ``dps``: ``sde_lib.conditional_sample(..., guidance="dps", normalize=True)`` with the score of
  ``models.with_loop_vjp`` (as ``experiments.images`` runs it): the forward and the
  vector-Jacobian product of the Tweedie mean, whose score the sampler's step reuses;
* ``dps, XLA's transpose``: the same with the plain score, whose input gradient inside the scan
  is XLA:CPU's generic convolution (``models.layers``);
* ``two evaluations``: the step as it was before the reuse (the step's forward, then
  ``jax.grad`` of the residual norm through a second forward), with the plain score.

Each is timed in interleaved rounds (plain, dps, ..., plain, ...), and the per-round ratios'
median and range are printed, so load that comes and goes moves both terms of a ratio; beside
them, each compiled program's number of convolutions (load-independent work). Run: ``python -m
benchmarks.inverse [--network unet_mnist] [--batch 64] [--steps 20] [--rounds 5]``; results go
in benchmarks/README.md with the command and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import models
import sde_lib
from benchmarks.samplers import IMAGE_SHAPES
from experiments import images
from sde_lib.sampling import driver


def two_evaluation_dps(rng, sde, score_fn, shape, A, y, zeta, num_steps):
    """The normalised DPS step with the score evaluated twice per step: once by the sampler's
    step, once inside ``jax.grad`` of the residual norm."""
    step, coeffs, _ = driver.build_sampler(sde, score_fn, "ddpm_ancestral", num_steps)

    def dps(key, x, c):
        x_next, x_mean = step(key, x, c)
        B = x.shape[0]
        t = jnp.full((B,), c.t, x.dtype)
        alpha, sigma = sde.marginal_coeffs(t)

        def norms(x):
            x0 = (x + sigma[:, None, None, None]**2 * score_fn(x, t)) / alpha[:, None, None, None]
            r = y - x0.reshape(B, -1) @ A.T
            return jnp.sum(jnp.sqrt(jnp.sum(r**2, axis=1) + jnp.finfo(x.dtype).tiny))
        move = zeta * jax.grad(norms)(x)
        return x_next - move, x_mean - move
    rng_prior, rng_steps = jax.random.split(rng)
    return driver.scan_steps(dps, rng_steps, sde.prior_sampling(rng_prior, shape), coeffs)


def programs(network: str, batch: int, steps: int):
    """The three jitted programs of a key, on the network's image shape."""
    sde = sde_lib.get_sde("vp")
    shape = (batch, *IMAGE_SHAPES[network])
    model = models.get_model(network)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape[1:])), jnp.ones((1,)))["params"]
    score_fn = models.get_score_fn(sde, model, params)
    A = jnp.asarray(images.observation("super-resolution", shape[1:3]))  # one channel
    y = jax.random.normal(jax.random.key(1), (batch, A.shape[0]))
    def dps(score_fn):
        return jax.jit(lambda k: sde_lib.conditional_sample(
            k, sde, score_fn, shape, A, y, guidance="dps", normalize=True, scale=1.0,
            method="ddpm_ancestral", num_steps=steps)[0])
    return {
        "plain": jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, shape,
                                                  method="ddpm_ancestral", num_steps=steps)[0]),
        "dps": dps(models.with_loop_vjp(score_fn)),
        "dps, XLA's transpose": dps(score_fn),
        "two evaluations": jax.jit(lambda k: two_evaluation_dps(k, sde, score_fn, shape, A, y,
                                                                1.0, steps)),
    }


def bench(network: str, batch: int, steps: int, rounds: int):
    fns = programs(network, batch, steps)
    key = jax.random.key(2)
    convs = {name: len(re.findall(r" convolution\(", f.lower(key).compile().as_text()))
             for name, f in fns.items()}
    for f in fns.values():
        jax.block_until_ready(f(key))  # compile and warm up
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(f(key))
            times[name].append(time.perf_counter() - start)
    t = {name: np.array(v) for name, v in times.items()}
    print(f"{network}, batch {batch}, {steps} ddpm_ancestral steps, {rounds} rounds "
          f"(load average {os.getloadavg()[0]:.2f})")
    print("| program | convolutions | s, median | / plain, median (range) |")
    print("|---|---|---|---|")
    for name in fns:
        r = t[name] / t["plain"]
        print(f"| {name} | {convs[name]} | {np.median(t[name]):.3f} | {np.median(r):.2f} "
              f"({r.min():.2f}-{r.max():.2f}) |")
    for name in ("dps, XLA's transpose", "two evaluations"):
        r = t["dps"] / t[name]
        print(f"dps / {name}: {np.median(r):.3f} ({r.min():.3f}-{r.max():.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="unet_digits", choices=sorted(IMAGE_SHAPES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench(args.network, args.batch, args.steps, args.rounds)


if __name__ == "__main__":
    main()
