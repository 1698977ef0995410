r"""Time conditioning: sinusoidal and Gaussian Fourier embeddings of the diffusion time ``t``.

Every network receives the continuous time ``t`` ``(B,)`` in ``[0, T]`` (a DDPM index ``i`` enters
as ``t_i = (i + 1) T / N``, see docs/sdes.md) and embeds ``time_scale * t + time_shift``. Networks
ported from diffusers or from score_sde's DDPM models were fed the index ``i`` itself:
``time_scale = N / T``, ``time_shift = -1`` gives exactly ``i`` at ``t_i`` (docs/porting.md).

* ``"sinusoidal"`` (Vaswani et al. 2017, Section 3.5; Ho et al. 2020, Appendix B): with
  ``half = dim // 2`` frequencies ``w_k = max_period^{-k / (half - 1)}``,
  ``emb = [sin(s t w), cos(s t w)]``. The default ``time_scale = 999`` is score_sde's convention
  for continuous VP models (``labels = 999 t``), so ``t in [0, 1]`` spans the DDPM index range
  ``0 .. 999`` the frequencies were designed for.
* ``"fourier"`` (Tancik et al. 2020; Song et al. 2021, NCSN++): ``emb = [sin(2 pi s t W),
  cos(2 pi s t W)]`` with ``W ~ N(0, fourier_scale^2)`` fixed. The frequencies are not parameters:
  they are drawn from ``jax.random.PRNGKey(seed)`` when the function is traced, so no optimizer or
  weight decay can move them and a checkpoint does not need to store them. score_sde embeds
  ``log sigma(t)`` for VE models; for the VE SDE ``log sigma(t)`` is affine in ``t``, so embedding
  ``s t`` spans the same features up to the random frequencies. The default ``time_scale = 1``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

EMBEDDINGS = ("sinusoidal", "fourier")
DEFAULT_TIME_SCALE = {"sinusoidal": 999.0, "fourier": 1.0}


def sinusoidal_embedding(t: ArrayLike, dim: int, max_period: float = 10_000.0) -> jax.Array:
    r"""Transformer position encoding of ``t`` ``(B,)``: ``(B, dim)`` (Ho et al. 2020, App. B).

    ``emb[:, k] = sin(t w_k)``, ``emb[:, half + k] = cos(t w_k)`` with
    ``w_k = max_period^{-k/(half-1)}`` for ``k < half = dim // 2``; an odd ``dim`` gets one zero
    column appended.
    """
    if dim < 4:
        raise ValueError(f"embedding dim must be >= 4, got {dim!r}")
    t = jnp.asarray(t)
    half = dim // 2
    w = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=t.dtype) / (half - 1))
    arg = t[:, None] * w[None, :]
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def fourier_frequencies(dim: int, scale: float = 16.0, seed: int = 0) -> jax.Array:
    """The fixed frequencies ``W ~ N(0, scale^2)`` ``(dim // 2,)`` of ``fourier_embedding``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"Fourier embedding dim must be even and >= 2, got {dim!r}")
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (dim // 2,), jnp.float32)


def fourier_embedding(t: ArrayLike, dim: int, scale: float = 16.0, seed: int = 0) -> jax.Array:
    r"""Gaussian Fourier features ``[sin(2 pi t W), cos(2 pi t W)]`` ``(B, dim)`` (Tancik et al.
    2020, Eq. 5; Song et al. 2021, NCSN++), ``W = fourier_frequencies(dim, scale, seed)``."""
    t = jnp.asarray(t)
    w = fourier_frequencies(dim, scale, seed).astype(t.dtype)
    arg = 2 * math.pi * t[:, None] * w[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


@dataclasses.dataclass(frozen=True)
class TimeEmbeddingConfig:
    """How a network embeds ``t``.

    Attributes:
      kind: ``"sinusoidal"`` or ``"fourier"``.
      time_scale: the embedded value is ``time_scale * t``; ``None`` picks 999 (sinusoidal,
        score_sde's continuous VP convention) or 1 (fourier).
      time_shift: added after scaling (``-1`` with ``time_scale = N / T`` feeds the DDPM index).
      fourier_scale: standard deviation of the fixed Fourier frequencies.
      seed: seed of the fixed Fourier frequencies.
    """

    kind: str = "sinusoidal"
    time_scale: float | None = None
    time_shift: float = 0.0
    fourier_scale: float = 16.0
    seed: int = 0

    def __post_init__(self):
        if self.kind not in EMBEDDINGS:
            raise ValueError(f"time embedding kind must be one of {EMBEDDINGS}, got {self.kind!r}")
        if self.time_scale is not None and not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive or None, got {self.time_scale!r}")
        if not self.fourier_scale > 0:
            raise ValueError(f"fourier_scale must be positive, got {self.fourier_scale!r}")

    @property
    def scale(self) -> float:
        """The factor applied to ``t`` before embedding."""
        return DEFAULT_TIME_SCALE[self.kind] if self.time_scale is None else self.time_scale

    def embed(self, t: ArrayLike, dim: int) -> jax.Array:
        """The parameter-free embedding of ``scale * t + time_shift`` ``(B,)``: ``(B, dim)``."""
        s = jnp.asarray(t) * self.scale + self.time_shift
        if self.kind == "fourier":
            return fourier_embedding(s, dim, self.fourier_scale, self.seed)
        return sinusoidal_embedding(s, dim)


class TimeMLP(nn.Module):
    """``Dense(out) o act o Dense(out)`` applied to the embedding of ``t`` (Ho et al. 2020, App. B:
    ``temb = Dense(4 ch)(swish(Dense(4 ch)(sinusoidal(t, ch))))``).

    Attributes:
      embedding: how ``t`` is embedded.
      embed_dim: width of the parameter-free embedding.
      out_dim: width of both dense layers.
    """

    embedding: TimeEmbeddingConfig
    embed_dim: int
    out_dim: int

    @nn.compact
    def __call__(self, t: ArrayLike) -> jax.Array:
        emb = self.embedding.embed(t, self.embed_dim)
        return nn.Dense(self.out_dim)(nn.silu(nn.Dense(self.out_dim)(emb)))


def as_time_embedding(value) -> TimeEmbeddingConfig:
    """A ``TimeEmbeddingConfig`` from itself, a kind name or a mapping of its fields."""
    if isinstance(value, TimeEmbeddingConfig):
        return value
    if isinstance(value, str):
        return TimeEmbeddingConfig(kind=value)
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        fields = {f.name for f in dataclasses.fields(TimeEmbeddingConfig)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"unknown time_embedding keys {unknown}; valid keys are "
                             f"{sorted(fields)}")
        return TimeEmbeddingConfig(**value)
    raise ValueError(f"time_embedding must be a TimeEmbeddingConfig, one of {EMBEDDINGS} or a "
                     f"mapping, got {value!r}")
