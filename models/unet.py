r"""The DDPM / DDPM++ U-Net on NHWC images (Ho et al. 2020, Appendix B; Song et al. 2021,
Appendix H), a PixelCNN++-style backbone with Wide-ResNet blocks, GroupNorm, time embedding
added in every block and single-head self-attention at chosen resolutions.

.. code-block:: text

    temb = Dense(4 ch)(silu(Dense(4 ch)(embed(t, ch))))
    h = Conv3x3(ch)(x);  skips = [h]
    for level l, m in enumerate(ch_mult):          # resolution R / 2^l
        num_res_blocks x: h = ResBlock(m ch)(h, temb); Attention(h) if res in attn_resolutions
                          skips.append(h)
        if not last level: h = Downsample(h) (3x3 conv, stride 2); skips.append(h)
    h = ResBlock, Attention, ResBlock                 # middle
    for level l reversed:
        (num_res_blocks + 1) x: h = ResBlock(m ch)(concat(h, skips.pop()), temb); Attention
        if l > 0: h = Upsample(h) (nearest x2 then 3x3 conv)
    out = Conv3x3(C)(silu(GroupNorm(h)))

ResBlock(c_out): ``h = Conv3x3(silu(GN(x))) + Dense(silu(temb))``,
``h = Conv3x3(dropout(silu(GN(h))))``, ``return (skip(x) + h) * s`` with ``skip`` a 1x1 conv when
the channel count changes (DDPM's NIN) and ``s = 1 / sqrt(2)`` with ``skip_rescale`` (DDPM++),
else 1. GroupNorm uses the largest divisor of the channel count ``<= min(32, C / 4)`` groups
(score_sde's ``min(C // 4, 32)``; 32 for every CIFAR-10 layer as in DDPM).
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
from models.layers import Conv, GroupNorm


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """U-Net hyper-parameters (defaults: the DDPM CIFAR-10 model, 35.7M parameters).

    Attributes:
      ch: base channel count.
      ch_mult: channel multiplier per resolution level; the image side must be divisible by
        ``2^(len(ch_mult) - 1)``.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: image sides at which self-attention follows each block.
      dropout: dropout rate in the residual blocks (only with ``train=True``).
      skip_rescale: scale residual sums by ``1 / sqrt(2)`` (DDPM++).
      time_embedding: a ``TimeEmbeddingConfig``, a kind name or a mapping of its fields.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    skip_rescale: bool = False
    time_embedding: TimeEmbeddingConfig = TimeEmbeddingConfig()

    def __post_init__(self):
        check_int("ch", self.ch, 4)
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level, got ()")
        for m in self.ch_mult:
            check_int("every ch_mult entry", m)
        for r in self.attn_resolutions:
            check_int("every attn_resolutions entry", r)
        check_int("num_res_blocks", self.num_res_blocks)
        check_rate("dropout", self.dropout)
        if not isinstance(self.skip_rescale, bool):
            raise ValueError(f"skip_rescale must be a bool, got {self.skip_rescale!r}")
        set_time_embedding(self)

    def build(self) -> UNet:
        return UNet(self)


def num_groups(channels: int) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` not above ``min(32, channels // 4)``
    (at least 1)."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


def _norm(h, name):
    return GroupNorm(num_groups=num_groups(h.shape[-1]), name=name)(h)


class ResBlock(nn.Module):
    """Wide-ResNet block with the time embedding added after the first convolution."""

    out_ch: int
    dropout: float
    skip_rescale: bool

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = Conv(self.out_ch, (3, 3), name="conv0")(nn.silu(_norm(x, "norm0")))
        h = h + nn.Dense(self.out_ch, name="time")(nn.silu(temb))[:, None, None, :]
        h = nn.silu(_norm(h, "norm1"))
        h = Dropout(self.dropout)(h, train)
        h = Conv(self.out_ch, (3, 3), name="conv1")(h)
        if x.shape[-1] != self.out_ch:
            x = Conv(self.out_ch, (1, 1), name="skip")(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H W`` positions (Ho et al. 2020, Appendix B)."""

    skip_rescale: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, H, W, C = x.shape
        h = _norm(x, "norm")
        q, k, v = (nn.Dense(C, name=n)(h).reshape(B, H * W, C) for n in ("q", "k", "v"))
        w = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(C), axis=-1)
        h = nn.Dense(C, name="proj")(jnp.einsum("bij,bjc->bic", w, v).reshape(B, H, W, C))
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


def _downsample(h, name):
    return Conv(h.shape[-1], (3, 3), strides=(2, 2), name=name)(h)


def upsample_nearest(h: jax.Array) -> jax.Array:
    """``(B, H, W, C) -> (B, 2 H, 2 W, C)``, each pixel repeated on a 2x2 block: what
    ``jax.image.resize(..., method="nearest")`` gives, as a broadcast and a reshape, whose
    gradient is a sum over the blocks instead of the resize's scatter-add (2.5-4x faster
    forward+backward on XLA:CPU, benchmarks/README.md)."""
    B, H, W, C = h.shape
    return jnp.broadcast_to(h[:, :, None, :, None, :], (B, H, 2, W, 2, C)).reshape(
        B, 2 * H, 2 * W, C)


def _upsample(h, name):
    return Conv(h.shape[-1], (3, 3), name=name)(upsample_nearest(h))


class UNet(nn.Module):
    """``(x (B, H, W, C), t (B,)) -> (B, H, W, C)``; see the module docstring."""

    config: UNetConfig

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        x, t = jnp.asarray(x), jnp.asarray(t)
        check_inputs(x, t, min_data_ndim=3, name="UNet")
        if x.ndim != 4:
            raise ValueError(f"UNet takes NHWC images (B, H, W, C), got shape {x.shape}")
        factor = 2 ** (len(cfg.ch_mult) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"image size {x.shape[1]}x{x.shape[2]} must be divisible by "
                             f"2^(len(ch_mult) - 1) = {factor} for ch_mult={cfg.ch_mult}")
        block = lambda c, name: ResBlock(c, cfg.dropout, cfg.skip_rescale, name=name)
        attn = lambda h, name: (AttnBlock(cfg.skip_rescale, name=name)(h)
                                if h.shape[1] in cfg.attn_resolutions else h)
        temb = TimeMLP(cfg.time_embedding, cfg.ch, 4 * cfg.ch, name="time")(t)

        h = Conv(cfg.ch, (3, 3), name="conv_in")(x)
        skips = [h]
        for lvl, mult in enumerate(cfg.ch_mult):
            for j in range(cfg.num_res_blocks):
                h = block(mult * cfg.ch, f"down{lvl}_block{j}")(h, temb, train)
                h = attn(h, f"down{lvl}_attn{j}")
                skips.append(h)
            if lvl < len(cfg.ch_mult) - 1:
                h = _downsample(h, f"down{lvl}_downsample")
                skips.append(h)

        h = block(h.shape[-1], "mid_block0")(h, temb, train)
        h = AttnBlock(cfg.skip_rescale, name="mid_attn")(h)
        h = block(h.shape[-1], "mid_block1")(h, temb, train)

        for lvl in reversed(range(len(cfg.ch_mult))):
            for j in range(cfg.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = block(cfg.ch_mult[lvl] * cfg.ch, f"up{lvl}_block{j}")(h, temb, train)
                h = attn(h, f"up{lvl}_attn{j}")
            if lvl > 0:
                h = _upsample(h, f"up{lvl}_upsample")

        h = nn.silu(_norm(h, "norm_out"))
        return Conv(x.shape[-1], (3, 3), name="conv_out")(h)
