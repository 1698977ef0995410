"""The probability-flow likelihood's cost and accuracy against dimension and dtype.

For the seeds' mixture ``gaussian_pair(d)`` (two unit-covariance Gaussians) with its exact
score, 8 points, Hutchinson's Rademacher probes and the default ``rtol = atol = 1e-5``: the NFE
of the adaptive solve, the largest error against the exact log-density (nats/dim; the one-probe
Hutchinson estimate's own error is part of it) and the wall time after compiling, in float32 and
float64 side by side; and the same for ``divergence="exact"`` where it is affordable
(``--exact-dims``). With ``--digits WORKDIR`` (a trained ``digits`` model, e.g.
``runs/digits/model``) also the bits/dim of ``--num-digits`` test digits in float32 (NFE and
time). With ``--probes M1 M2 ...`` (at ``--probe-dim``, float32): several Hutchinson probes per
example (``num_probes``): one probe's sd and the ``M``-probe mean's standard error against its
actual error (nats/dim), NFE and wall time against one probe's.

Run: ``python -m benchmarks.likelihood [--dims 16 64 256 784] [--exact-dims 16 64]
[--digits runs/digits/model] [--probes 1 4 16 --probe-dim 784]``; results go in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # noqa: E402 (float64 rows beside float32 ones)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sde_lib  # noqa: E402


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def mixture_row(dim, dtype, divergence):
    sde = sde_lib.VPSDE()
    gmm = sde_lib.gaussian_pair(jax.random.key(0), dim)
    x = gmm.sample(jax.random.key(1), 8)
    exact = np.asarray(gmm.log_prob(x), np.float64)
    g = jax.tree.map(lambda a: a.astype(dtype), gmm)
    run = jax.jit(lambda x: sde_lib.log_likelihood(jax.random.key(2), sde, g.score_fn(sde), x,
                                                   divergence=divergence))
    (logp, nfe), wall = _timed(run, x.astype(dtype))
    err = np.max(np.abs(np.asarray(logp, np.float64) - exact)) / dim
    return (f"| {dim} | {jnp.dtype(dtype).name} | {divergence} | {int(nfe)} | {err:.2e} | "
            f"{wall:.2f} |")


def probe_rows(dim, probes):
    """One row per number of probes: at ``dim``, float32, 8 points of ``gaussian_pair``."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.gaussian_pair(jax.random.key(0), dim)
    x = gmm.sample(jax.random.key(1), 8)
    exact = np.asarray(gmm.log_prob(x), np.float64)
    g = jax.tree.map(lambda a: a.astype(jnp.float32), gmm)
    rows, base = [], None
    for m in probes:
        run = jax.jit(lambda x, m=m: sde_lib.log_likelihood(
            jax.random.key(2), sde, g.score_fn(sde), x, num_probes=m, per_probe=True))
        (logp, nfe), wall = _timed(run, x.astype(jnp.float32))
        logp = np.asarray(logp, np.float64)
        base = base or wall
        err = np.abs(logp.mean(0) - exact) / dim
        sd = logp.std(0, ddof=1) / dim if m > 1 else np.full(len(exact), np.nan)
        rows.append(f"| {dim} | {m} | {int(nfe)} | {np.mean(sd):.3f} | "
                    f"{np.mean(sd) / math.sqrt(m):.4f} | {np.mean(err):.4f} | {np.max(err):.4f} "
                    f"| {wall:.2f} | {wall / base:.2f} |")
    return rows


def digits_row(workdir, num):
    import trainer
    from experiments import images
    from experiments.configs import digits as digits_config
    try:
        config = trainer.saved_config(workdir)
    except (FileNotFoundError, ValueError):  # a workdir from before config.json named its model
        config = digits_config.get_config()
    score_fn, sde = trainer.load_score_fn(workdir, config)
    cfg = trainer.parse_config(config)
    v, levels = images.load_images(cfg.data, "test")
    v = v[:num]
    rng = jax.random.key(0)
    k_deq, k_ll = jax.random.split(rng)
    data_range = images.image_range(levels)
    x = sde_lib.uniform_dequantize(k_deq, v, data_range, num_bins=levels).astype(jnp.float32)
    run = jax.jit(lambda x: sde_lib.log_likelihood(k_ll, sde, score_fn, x, rtol=1e-4,
                                                   atol=1e-4))
    (logp, nfe), wall = _timed(run, x)
    D = math.prod(x.shape[1:])
    bpd = np.asarray(sde_lib.bits_per_dim(logp, D, data_range, num_bins=levels))
    return (f"| digits ({cfg.model_name}, {num} test digits, rtol = atol = 1e-4) | float32 | "
            f"{int(nfe)} | {bpd.mean():.3f} +- {bpd.std(ddof=1) / math.sqrt(len(bpd)):.3f} | "
            f"{wall:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="*", default=[16, 64, 256, 784])
    parser.add_argument("--exact-dims", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--digits", default=None, help="a trained digits model's workdir")
    parser.add_argument("--num-digits", type=int, default=64)
    parser.add_argument("--probes", type=int, nargs="*", default=[],
                        help="numbers of Hutchinson probes per example to compare")
    parser.add_argument("--probe-dim", type=int, default=784)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}; jax {jax.__version__}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| d | dtype | divergence | NFE | max error (nats/dim) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for dim in args.dims:
        for dtype in (jnp.float32, jnp.float64):
            print(mixture_row(dim, dtype, "rademacher"), flush=True)
    for dim in args.exact_dims:
        for dtype in (jnp.float32, jnp.float64):
            print(mixture_row(dim, dtype, "exact"), flush=True)
    if args.probes:
        print("\n| d | probes | NFE | one probe's sd (nats/dim) | standard error (nats/dim) | "
              "mean error (nats/dim) | max error (nats/dim) | wall (s) | wall / 1st row |")
        print("|---|---|---|---|---|---|---|---|---|")
        for row in probe_rows(args.probe_dim, args.probes):
            print(row, flush=True)
    if args.digits:
        print("\n| data | dtype | NFE | bits/dim (+- SE) | wall (s) |")
        print("|---|---|---|---|---|")
        print(digits_row(args.digits, args.num_digits), flush=True)


if __name__ == "__main__":
    main()
