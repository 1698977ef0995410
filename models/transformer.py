r"""A Transformer denoiser whose tokens are the coordinates of ``x`` ``(B, d)`` or the patches of
an image ``(B, H, W, C)``, conditioned on time by adaptive layer norm (DiT's adaLN-Zero; Peebles &
Xie 2023, Section 3.2).

.. code-block:: text

    c      = Dense(E)(silu(Dense(E)(embed(t, E))))            time condition (B, E)
    tokens = Dense(E)(coordinate or patch) + learned position  (B, N, E)
    L x:  shift1, scale1, gate1, shift2, scale2, gate2 = Dense(6E, zero init)(silu(c))
          h = h + gate1 * SelfAttention(LN(h) (1 + scale1) + shift1)
          h = h + gate2 * MLP(LN(h) (1 + scale2) + shift2)
    out    = Dense(P)(LN(h) (1 + scale) + shift), shift, scale = Dense(2E, zero init)(silu(c))

The zero-initialised modulations make every block the identity at initialisation (adaLN-Zero).
A vector ``x`` ``(B, d)`` gives ``N = d`` tokens of one value each (the Gaussian-mixture
studies); an image gives ``N = (H / p) (W / p)`` patches of ``P = p^2 C`` values.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from models._checks import check_inputs, check_int, check_rate, set_time_embedding
from models.dropout import Dropout
from models.embeddings import TimeEmbeddingConfig, TimeMLP


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Transformer denoiser hyper-parameters.

    Attributes:
      dim: token width ``E`` (divisible by ``num_heads``).
      depth: number of blocks ``L``.
      num_heads: attention heads.
      mlp_ratio: hidden width of the block MLP is ``mlp_ratio * E``.
      patch_size: side ``p`` of the square image patches (images only; must divide H and W).
      dropout: dropout rate after attention and in the MLP (only with ``train=True``).
      time_embedding: a ``TimeEmbeddingConfig``, a kind name or a mapping of its fields.
    """

    dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    patch_size: int = 2
    dropout: float = 0.0
    time_embedding: TimeEmbeddingConfig = TimeEmbeddingConfig()

    def __post_init__(self):
        check_int("dim", self.dim, 4)
        check_int("depth", self.depth, 0)
        check_int("num_heads", self.num_heads)
        check_int("mlp_ratio", self.mlp_ratio)
        check_int("patch_size", self.patch_size)
        check_rate("dropout", self.dropout)
        if self.dim % self.num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={self.dim}, "
                             f"num_heads={self.num_heads}")
        set_time_embedding(self)

    def build(self) -> TransformerDenoiser:
        return TransformerDenoiser(self)


def _modulate(h, shift, scale):
    return h * (1 + scale[:, None, :]) + shift[:, None, :]


def _norm():
    return nn.LayerNorm(use_bias=False, use_scale=False)


class AdaLNBlock(nn.Module):
    """One DiT block with adaLN-Zero conditioning on ``c`` ``(B, E)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, h: jax.Array, c: jax.Array, train: bool) -> jax.Array:
        cfg = self.config
        E = cfg.dim
        mod = nn.Dense(6 * E, kernel_init=nn.initializers.zeros, name="adaln")(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        y = nn.MultiHeadDotProductAttention(cfg.num_heads, qkv_features=E, name="attn")(
            _modulate(_norm()(h), shift1, scale1))
        y = Dropout(cfg.dropout)(y, train)
        h = h + gate1[:, None, :] * y
        y = nn.gelu(nn.Dense(cfg.mlp_ratio * E, name="mlp0")(_modulate(_norm()(h), shift2, scale2)))
        y = Dropout(cfg.dropout)(y, train)
        return h + gate2[:, None, :] * nn.Dense(E, name="mlp1")(y)


class TransformerDenoiser(nn.Module):
    """``(x (B, d) or (B, H, W, C), t (B,)) -> same shape``; see the module docstring."""

    config: TransformerConfig

    def _tokenize(self, x):
        if x.ndim == 2:
            return x[:, :, None]
        if x.ndim != 4:
            raise ValueError(f"TransformerDenoiser takes x of shape (B, d) or (B, H, W, C), got "
                             f"{x.shape}")
        B, H, W, C = x.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"patch_size {p} must divide the image size {H}x{W}")
        x = x.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def _untokenize(self, tokens, shape):
        if len(shape) == 2:
            return tokens[:, :, 0]
        B, H, W, C = shape
        p = self.config.patch_size
        x = tokens.reshape(B, H // p, W // p, p, p, C).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(shape)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        x, t = jnp.asarray(x), jnp.asarray(t)
        check_inputs(x, t, name="TransformerDenoiser")
        tokens = self._tokenize(x)
        N, P = tokens.shape[1:]
        c = TimeMLP(cfg.time_embedding, cfg.dim, cfg.dim, name="time")(t)
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (N, cfg.dim))
        h = nn.Dense(cfg.dim, name="embed")(tokens) + pos[None].astype(tokens.dtype)
        for i in range(cfg.depth):
            h = AdaLNBlock(cfg, name=f"block{i}")(h, c, train)
        shift, scale = jnp.split(
            nn.Dense(2 * cfg.dim, kernel_init=nn.initializers.zeros, name="final_adaln")(
                nn.silu(c)), 2, axis=-1)
        out = nn.Dense(P, name="output")(_modulate(_norm()(h), shift, scale))
        return self._untokenize(out, x.shape)
