r"""Divergence estimates of a batched vector field, shared by the likelihood and the losses.

A divergence ``Tr J`` (``J = d fn / dx`` per example) is either ``"exact"`` (one jvp per data
entry) or Hutchinson's estimate ``E_z[z^T J z]`` with probes ``z`` of a law with
``E[z z^T] = I`` (Hutchinson 1989; Grathwohl et al. 2019): ``PROBES``.
``DIVERGENCES`` names them all (the explicit score-matching loss takes each);
``ESTIMATES`` holds the one-probe estimators the probability-flow likelihood takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from sde_lib._arrays import sum_except_batch

# probe laws with E[v v^T] = I: standard Gaussian, Rademacher (+-1), uniform on the sphere of
# radius sqrt(d)
PROBES = ("gaussian", "rademacher", "sphere")
DIVERGENCES = ("exact",) + PROBES


def hutchinson_divergence(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                          z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``fn(x)`` and the per-example ``z^T J z`` from one forward-mode pass (``J = d fn / dx``)."""
    fx, jz = jax.jvp(fn, (x,), (z,))
    return fx, sum_except_batch(jz * z)


# the exact divergence's jvps are vmapped in chunks of at most this many basis vectors times
# batch elements times D (the (chunk, B, D) Jacobian columns; 2^24 floats = 64 MiB in float32)
EXACT_DIVERGENCE_CHUNK_ELEMENTS = 2**24


def exact_divergence(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                     z: None) -> tuple[jax.Array, jax.Array]:
    """``fn(x)`` and the per-example trace of ``J``: one jvp per basis vector ``e_j`` of the data
    space, with ``e_j`` in every example at once (examples are independent under ``score_fn``,
    so the batch Jacobian is block diagonal), keeping only the diagonal entry of each column.
    Costs ``D`` jvps (about ``D`` times Hutchinson's one): small ``D`` only. The jvps are
    vmapped in chunks (``lax.map(batch_size=)``) so that memory is ``chunk x B x D``, not the
    whole ``(D, B, D)`` Jacobian."""
    B, D = x.shape[0], math.prod(x.shape[1:])
    fx = fn(x)

    def diagonal_entry(j):  # (J e_j)_j for every example: (B,)
        e = jax.nn.one_hot(j, D, dtype=x.dtype).reshape(x.shape[1:])
        column = jax.jvp(fn, (x,), (jnp.broadcast_to(e, x.shape),))[1]
        return column.reshape(B, D)[:, j]

    chunk = max(1, min(D, EXACT_DIVERGENCE_CHUNK_ELEMENTS // max(1, B * D)))
    return fx, jnp.sum(lax.map(diagonal_entry, jnp.arange(D), batch_size=chunk), axis=0)


# the likelihood's divergences: name -> (draw of one probe per example, draw(rng, shape, dtype),
# or None; estimate(fn, x, z) -> (fn(x), divergence (B,)))
ESTIMATES = {
    "exact": (None, exact_divergence),
    "rademacher": (jax.random.rademacher, hutchinson_divergence),
    "gaussian": (jax.random.normal, hutchinson_divergence),
}
