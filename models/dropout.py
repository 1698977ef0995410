"""Dropout whose masks belong to examples, not to batches.

``Dropout`` is flax's ``nn.Dropout`` (keep with probability ``1 - rate``, scale kept values by
``1 / (1 - rate)``; the layer's key from the ``"dropout"`` rng stream) with one difference: inside
``example_ids(ids)`` the mask of example ``b`` is drawn from ``fold_in(layer_key, ids[b])`` alone,
so an example's masks do not depend on which other examples share its batch or on where it sits
in it. The trainer passes each example's global position in the batch: the masks, like the
loss's times and noise, do not depend on how the batch is split over devices and processes,
while the network runs once on the whole batch (no ``vmap`` over blocks of examples around it,
which XLA:CPU computes more slowly). Outside ``example_ids`` one key draws the whole batch's mask,
as ``nn.Dropout`` does.
"""

from __future__ import annotations

import contextlib
import contextvars

import flax.linen as nn
import jax
import jax.numpy as jnp

_EXAMPLE_IDS: contextvars.ContextVar = contextvars.ContextVar("example_ids", default=None)


@contextlib.contextmanager
def example_ids(ids: jax.Array | None):
    """Within this context (while a network is applied, also when traced) ``Dropout`` draws the
    mask of example ``b`` from its id ``ids[b]`` (an integer array ``(B,)``, unique per example
    of a step; ``None``: the whole batch from one key)."""
    token = _EXAMPLE_IDS.set(None if ids is None else jnp.asarray(ids))
    try:
        yield
    finally:
        _EXAMPLE_IDS.reset(token)


class Dropout(nn.Module):
    """``nn.Dropout(rate)`` with per-example masks inside ``example_ids`` (module docstring)."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        key = self.make_rng("dropout")
        ids = _EXAMPLE_IDS.get()
        if ids is None:
            mask = jax.random.bernoulli(key, keep, x.shape)
        else:
            if ids.shape != x.shape[:1]:
                raise ValueError(f"example_ids has shape {ids.shape}, the batch {x.shape[:1]}")
            mask = jax.vmap(lambda i: jax.random.bernoulli(
                jax.random.fold_in(key, i), keep, x.shape[1:]))(ids)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
