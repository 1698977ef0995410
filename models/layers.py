r"""Drop-in replacements for ``nn.Conv`` and ``nn.GroupNorm`` that XLA:CPU computes faster.

Each declares the same parameters as the Flax layer it replaces (names, shapes, initializers,
float32), so a checkpoint of one loads into the other, and computes the same function up to
floating-point rounding; only the formulation differs (issue 30, measured in
benchmarks/README.md, "U-Net layers"):

* ``Conv`` with a 1x1 kernel and stride 1 (the U-Net's NIN skips) is a product on the channel
  axis, ``y = x W + b``: XLA:CPU runs that ``dot`` and its gradients 1.2-3x faster than the
  same ``conv_general_dilated``. Other kernels go through ``lax.conv_general_dilated`` exactly as
  ``nn.Conv`` does ('SAME' padding, NHWC / HWIO): im2col (9 shifted slices and one product) and
  9 accumulated shifted products measured 1.1-4x slower there.
* ``GroupNorm`` takes the group statistics on ``(B, H W, G, C / G)`` and folds them with the
  affine parameters into one scale and shift per example and channel,

  .. math::  y = x a_{bc} + (\beta_c - \mu_{bg} a_{bc}),\qquad a_{bc} = \gamma_c /
             \sqrt{\sigma^2_{bg} + \epsilon},

  with :math:`\sigma^2 = E[x^2] - E[x]^2` in at least float32 (clipped at 0), as ``nn.GroupNorm``
  computes it (``use_fast_variance``): one multiply-add over the full-size array instead of a
  subtraction, a multiply and the affine, 0.5-0.8x nn.GroupNorm's forward+backward time. The
  fold adds a rounding error of order ``eps |mu| / sigma`` relative, below the one the
  one-pass variance already has (``eps mu^2 / sigma^2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

default_kernel_init = nn.initializers.lecun_normal()


class Conv(nn.Module):
    """``nn.Conv(features, kernel_size, strides)`` with 'SAME' padding on NHWC inputs.

    Parameters: ``kernel`` ``(*kernel_size, C_in, features)`` (LeCun normal) and ``bias``
    ``(features,)`` (zeros), as ``nn.Conv``'s.
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = tuple(self.kernel_size)
        strides = ((self.strides,) * len(kernel_size) if isinstance(self.strides, int)
                   else tuple(self.strides))
        kernel = self.param("kernel", default_kernel_init,
                            (*kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = jnp.result_type(x, kernel, bias)
        x, kernel, bias = (jnp.asarray(a, dtype) for a in (x, kernel, bias))
        if all(k == 1 for k in kernel_size) and all(s == 1 for s in strides):
            y = jnp.dot(x, kernel.reshape(kernel.shape[-2:]))
        else:
            y = lax.conv_general_dilated(x, kernel, strides, "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


class GroupNorm(nn.Module):
    """``nn.GroupNorm(num_groups, epsilon)`` over ``(H, W, C / G)`` of NHWC inputs.

    Parameters: ``scale`` ``(C,)`` (ones) and ``bias`` ``(C,)`` (zeros), as ``nn.GroupNorm``'s.
    """

    num_groups: int = 32
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, C, G = x.shape[0], x.shape[-1], self.num_groups
        if C % G:
            raise ValueError(f"num_groups {G} does not divide the {C} channels")
        gamma = self.param("scale", nn.initializers.ones, (C,), jnp.float32)
        beta = self.param("bias", nn.initializers.zeros, (C,), jnp.float32)
        dtype = jnp.result_type(x, gamma, beta)
        stats_dtype = jnp.promote_types(dtype, jnp.float32)
        xg = x.astype(stats_dtype).reshape(B, -1, G, C // G)
        mu = xg.mean((1, 3))
        var = jnp.maximum((xg * xg).mean((1, 3)) - mu * mu, 0.0)
        a = jnp.repeat(lax.rsqrt(var + self.epsilon), C // G, axis=-1) * gamma[None]  # (B, C)
        b = beta[None] - jnp.repeat(mu, C // G, axis=-1) * a
        shape = (B,) + (1,) * (x.ndim - 2) + (C,)  # (B, 1, 1, C)
        y = x * a.reshape(shape) + b.reshape(shape)
        return y.astype(dtype)
