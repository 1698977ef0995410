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
* Inside ``loop_vjp()`` a ``Conv`` with a larger kernel has a custom VJP: its input gradient
  is the forward convolution of the cotangent (dilated by the strides) with the spatially
  flipped, in/out-swapped kernel, in the forward's NHWC / HWIO layout. JAX's own transpose rule
  emits that convolution with the kernel's in/out labels swapped (``01oi``), which XLA:CPU
  canonicalizes only in the entry computation: inside a ``lax.scan`` or ``while`` body it runs
  a generic convolution 4-5x slower (jax issue 12868) -- the gradients of DPS and PiGDM
  through a U-Net, taken at every sampler step, are that case. The kernel gradient stays
  JAX's. A network applied inside ``loop_vjp()`` cannot be differentiated in forward mode
  (``jax.jvp`` of a custom VJP raises), so the likelihood's divergence uses the plain form.
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

import contextlib
import contextvars
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

default_kernel_init = nn.initializers.lecun_normal()
_NHWC = ("NHWC", "HWIO", "NHWC")
_LOOP_VJP: contextvars.ContextVar = contextvars.ContextVar("loop_vjp", default=False)


@contextlib.contextmanager
def loop_vjp(enabled: bool = True):
    """Within this context (while a network is traced) ``Conv`` layers with a kernel larger
    than 1x1 use ``conv_loop_vjp`` (module docstring). JAX's trace and compilation caches do
    not see the context: a function traced outside it is not traced again inside it, so jit
    only functions that are themselves made inside it, or use ``models.with_loop_vjp``, whose
    score carries the setting in its static part."""
    token = _LOOP_VJP.set(bool(enabled))
    try:
        yield
    finally:
        _LOOP_VJP.reset(token)


def _conv(x, kernel, strides):
    return lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=_NHWC)


def conv_input_gradient(g: jax.Array, kernel: jax.Array, x_shape: Sequence[int],
                        strides: Sequence[int]) -> jax.Array:
    """The gradient with respect to ``x`` (of shape ``x_shape``) of ``<g, conv(x, kernel)>``,
    for the 'SAME'-padded NHWC / HWIO convolution with ``strides``: ``g`` dilated by the
    strides and convolved with the flipped, in/out-swapped kernel, padded so that the result
    has ``x``'s size (JAX's transpose rule's padding)."""
    window = kernel.shape[:-2]
    spatial = tuple(x_shape[1:-1])
    pads = []
    for n, k, s, (lo, _), o in zip(spatial, window, strides,
                                   lax.padtype_to_pads(spatial, window, strides, "SAME"),
                                   g.shape[1:-1], strict=True):
        before = k - 1 - lo
        pads.append((before, n + k - 1 - ((o - 1) * s + 1) - before))
    flipped = jnp.flip(kernel, axis=tuple(range(len(window)))).swapaxes(-1, -2)
    return lax.conv_general_dilated(g, flipped, (1,) * len(window), pads, lhs_dilation=strides,
                                    dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_loop_vjp(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
    """The 'SAME'-padded NHWC / HWIO convolution, its input gradient by
    ``conv_input_gradient`` (module docstring)."""
    return _conv(x, kernel, strides)


def _conv_loop_vjp_fwd(x, kernel, strides):
    return _conv(x, kernel, strides), (x, kernel)


def _conv_loop_vjp_bwd(strides, residuals, g):
    x, kernel = residuals
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, strides), kernel)
    return conv_input_gradient(g, kernel, x.shape, strides), kernel_vjp(g)[0]


conv_loop_vjp.defvjp(_conv_loop_vjp_fwd, _conv_loop_vjp_bwd)


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
        elif _LOOP_VJP.get():
            y = conv_loop_vjp(x, kernel, strides)
        else:
            y = _conv(x, kernel, strides)
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
