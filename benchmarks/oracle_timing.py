"""The exact mixture score's call time round by round: is its spread ours?

``GaussianMixture.score_fn`` of ``gaussian_pair(d)`` under the VP SDE, jitted once, called
``--calls`` times per round (each call blocked on) for ``--rounds`` rounds; prints each round's
mean, the spread (max / min), the number of compilations (1: no round recompiles) and the output
dtype, with the load average. Run it twice, with XLA's default thread pool and with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``, to see how much of the spread is other jobs
delaying XLA's worker threads.

Run: ``python -m benchmarks.oracle_timing [--dim 64] [--batch 4096]``; results go in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp

import sde_lib


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    sde = sde_lib.VPSDE()
    score_fn = jax.jit(sde_lib.gaussian_pair(jax.random.key(0), args.dim).score_fn(sde))
    x = jax.random.normal(jax.random.key(1), (args.batch, args.dim), jnp.float32)
    t = jnp.full((args.batch,), 0.5, jnp.float32)
    out = jax.block_until_ready(score_fn(x, t))
    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.calls):
            jax.block_until_ready(score_fn(x, t))
        rounds.append((time.perf_counter() - start) / args.calls * 1e3)
    print(f"d = {args.dim}, batch {args.batch}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"load {os.getloadavg()[0]:.1f}: ms per call by round "
          f"{' '.join(f'{v:.2f}' for v in rounds)}; max / min {max(rounds) / min(rounds):.1f}; "
          f"compilations {score_fn._cache_size()}; output {out.dtype}")


if __name__ == "__main__":
    main()
