r"""A residual MLP denoiser for low-dimensional data ``x`` ``(B, d)`` (or any ``(B, *D)``,
flattened).

Architecture (pre-norm residual blocks, the time entering every block as in Ho et al. 2020's
ResBlock):

.. code-block:: text

    temb = Dense(H)(silu(Dense(H)(embed(t, H))))
    h    = Dense(H)(x)
    L x: h = h + Dense(H)(dropout(silu(Dense(H)(LayerNorm(h)) + Dense(H, no bias)(temb))))
    out  = Dense(d)(silu(LayerNorm(h)))

Parameters: ``2 (H^2 + H)`` (time MLP) ``+ d H + H`` (input) ``+ L (3 H^2 + 4 H)`` (blocks)
``+ 2 H + H d + d`` (output).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models._checks import check_inputs, check_int, check_rate, set_time_embedding
from models.dropout import Dropout
from models.embeddings import TimeEmbeddingConfig, TimeMLP


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Residual MLP hyper-parameters.

    Attributes:
      hidden: width ``H``.
      num_blocks: number of residual blocks ``L``.
      dropout: dropout rate inside the blocks (active only with ``train=True``).
      time_embedding: a ``TimeEmbeddingConfig``, a kind name or a mapping of its fields.
    """

    hidden: int = 256
    num_blocks: int = 3
    dropout: float = 0.0
    time_embedding: TimeEmbeddingConfig = TimeEmbeddingConfig()

    def __post_init__(self):
        check_int("hidden", self.hidden, 4)
        check_int("num_blocks", self.num_blocks, 0)
        check_rate("dropout", self.dropout)
        set_time_embedding(self)

    def build(self) -> ResidualMLP:
        return ResidualMLP(self)


class ResidualMLP(nn.Module):
    """``(x (B, *D), t (B,)) -> (B, *D)``; see the module docstring."""

    config: MLPConfig

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        x, t = jnp.asarray(x), jnp.asarray(t)
        check_inputs(x, t, name="ResidualMLP")
        d = math.prod(x.shape[1:])
        H = cfg.hidden
        temb = TimeMLP(cfg.time_embedding, H, H, name="time")(t)
        h = nn.Dense(H, name="input")(x.reshape(x.shape[0], d))
        for i in range(cfg.num_blocks):
            y = nn.Dense(H, name=f"block{i}_dense0")(nn.LayerNorm(name=f"block{i}_norm")(h))
            y = nn.silu(y + nn.Dense(H, use_bias=False, name=f"block{i}_time")(temb))
            y = Dropout(cfg.dropout)(y, train)
            h = h + nn.Dense(H, name=f"block{i}_dense1")(y)
        out = nn.Dense(d, name="output")(nn.silu(nn.LayerNorm(name="output_norm")(h)))
        return out.reshape(x.shape)
