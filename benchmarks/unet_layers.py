"""The U-Net's layers as ``models.layers`` computes them against the Flax layers they replace.

For each network (``--cases``, default ``unet_digits unet_mnist``) at ``--batch`` (128):

* per layer: every ``Conv``, ``GroupNorm``, ``Dense``, ``AttnBlock`` and upsampling call of
  the network is recorded with its input shape; each distinct one is timed alone, forward+backward
  (``jax.value_and_grad`` of ``sum(layer(x) * cotangent)`` with respect to its parameters and
  input), with ``models.layers`` and ``unet.upsample_nearest`` (new) and with ``nn.Conv`` /
  ``nn.GroupNorm`` / ``jax.image.resize`` (old), and
  multiplied by its number of calls: the share of each layer kind in the old network and the
  ratio new / old;
* whole network: the bare pass of ``benchmarks.train_step`` (``jax.jit(jax.value_and_grad)``
  of the mean squared error, ``train=True``), new against old, in ms per example.

Old and new are timed interleaved, ``--repeats`` rounds of ``--calls`` calls each, in one
process; the median and range of the per-round ratios are printed (the machines here are
shared and noisy). Run ``python -m benchmarks.unet_layers``; results go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import time
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from models import layers
from models import unet as unet_module

SHAPES = {"unet_digits": (8, 8, 1), "unet_mnist": (28, 28, 1)}
RECORDED = (layers.Conv, layers.GroupNorm, nn.Dense, unet_module.AttnBlock)


def resize_nearest(h):
    """The upsampling as it was: ``jax.image.resize`` (a gather; its gradient a scatter-add)."""
    B, H, W, C = h.shape
    return jax.image.resize(h, (B, 2 * H, 2 * W, C), method="nearest")


@contextlib.contextmanager
def flax_layers():
    """The U-Net built from ``nn.Conv``, ``nn.GroupNorm`` and ``jax.image.resize`` while the
    block is open (traced)."""
    with mock.patch.object(unet_module, "Conv", nn.Conv), \
            mock.patch.object(unet_module, "GroupNorm", nn.GroupNorm), \
            mock.patch.object(unet_module, "upsample_nearest", resize_nearest):
        yield


class _Upsample(nn.Module):
    """``unet.upsample_nearest`` as a module (no parameters), for the per-layer timings."""

    @nn.compact
    def __call__(self, h):
        return unet_module.upsample_nearest(h)


def kind(module, shape) -> str:
    if isinstance(module, layers.Conv):
        strides = module.strides if isinstance(module.strides, int) else max(module.strides)
        k = "x".join(map(str, module.kernel_size))
        return f"conv {k}" + (f" stride {strides}" if strides > 1 else "")
    return {layers.GroupNorm: "groupnorm", nn.Dense: "dense",
            unet_module.AttnBlock: "attention"}[type(module)]


def record_layers(model, shape, batch):
    """``[(kind, module, input shape, calls)]`` of one forward pass (the layers inside an
    attention block counted in it)."""
    calls, modules, inside = collections.Counter(), {}, []

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if context.method_name != "__call__" or not isinstance(m, RECORDED) or inside:
            return next_fun(*args, **kwargs)
        x_shape = tuple(args[0].shape)
        key = (kind(m, x_shape), x_shape, repr(m.clone(parent=None, name="layer")))
        calls[key] += 1
        modules[key] = m.clone(parent=None, name=None)
        inside.append(m)
        try:
            return next_fun(*args, **kwargs)
        finally:
            inside.pop()

    def upsample(h):
        key = ("upsample nearest", tuple(h.shape), "")
        calls[key] += 1
        modules[key] = _Upsample()
        return resize_nearest(h)

    with nn.intercept_methods(interceptor), \
            mock.patch.object(unet_module, "upsample_nearest", upsample):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((batch, *shape)),
                                          jnp.ones((batch,))))
    return [(key[0], modules[key], key[1], n) for key, n in sorted(calls.items())]


def reference(module):
    """The Flax layer a ``models.layers`` module replaces (the module itself otherwise, then
    traced inside ``flax_layers``)."""
    if isinstance(module, layers.Conv):
        return nn.Conv(module.features, tuple(module.kernel_size), strides=module.strides)
    if isinstance(module, layers.GroupNorm):
        return nn.GroupNorm(num_groups=module.num_groups, epsilon=module.epsilon)
    return module


def interleaved(fns, args, calls, repeats):
    """``(repeats, len(fns))`` mean seconds per call, the functions alternating in each round."""
    for f in fns:
        jax.block_until_ready(f(*args))
    times = np.zeros((repeats, len(fns)))
    for r in range(repeats):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls):
                out = f(*args)
            jax.block_until_ready(out)
            times[r, i] = (time.perf_counter() - start) / calls
    return times


def layer_fwd_bwd(module, x_shape, rng):
    """A jitted ``(params, x, ct) -> value_and_grad`` of ``sum(module(x) * ct)`` and its args."""
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    params = module.init(jax.random.PRNGKey(0), x).get("params", {})
    ct = jnp.asarray(rng.normal(size=jax.eval_shape(
        lambda: module.apply({"params": params}, x)).shape), jnp.float32)

    def fwd_bwd(p, x, ct):
        return jax.value_and_grad(
            lambda p, x: jnp.sum(module.apply({"params": p}, x) * ct), argnums=(0, 1))(p, x)

    return jax.jit(fwd_bwd), (params, x, ct)


def bench_layers(name, batch, calls, repeats):
    model = models.get_model(name)
    rng = np.random.default_rng(0)
    old_ms, new_ms, ratios = collections.Counter(), collections.Counter(), {}
    for k, module, x_shape, n in record_layers(model, SHAPES[name], batch):
        new, args = layer_fwd_bwd(module, x_shape, rng)
        old, _ = layer_fwd_bwd(reference(module), x_shape, rng)
        with flax_layers():  # traced with the Flax layers (the attention block's GroupNorm)
            jax.block_until_ready(old(*args))
        times = interleaved([old, new], args, calls, repeats)
        old_ms[k] += n * 1e3 * np.median(times[:, 0])
        new_ms[k] += n * 1e3 * np.median(times[:, 1])
        ratios.setdefault(k, []).extend(times[:, 1] / times[:, 0])
    total = sum(old_ms.values())
    rows = []
    for k in sorted(old_ms, key=old_ms.get, reverse=True):
        r = np.asarray(ratios[k])
        rows.append(f"| {name} | {k} | {old_ms[k]:.1f} | {100 * old_ms[k] / total:.0f}% | "
                    f"{new_ms[k]:.1f} | {np.median(r):.2f} [{r.min():.2f}, {r.max():.2f}] |")
    return rows, total


def bench_network(name, batch, calls, repeats):
    model = models.get_model(name)
    shape = SHAPES[name]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1.0, 1.0, (batch, *shape)), jnp.float32)
    t = jnp.asarray(rng.uniform(1e-3, 1.0, (batch,)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x, t)["params"]
    key = jax.random.PRNGKey(1)

    def make_bare():
        @jax.jit
        def bare(params):
            def mse(p):
                model_fn = models.get_model_fn(model, p, True, key)
                return jnp.mean((model_fn(x, t) - target) ** 2)
            return jax.value_and_grad(mse)(params)
        return bare

    new, old = make_bare(), make_bare()
    with flax_layers():  # traced (and compiled) with the Flax layers
        jax.block_until_ready(old(params))
    times = interleaved([old, new], (params,), calls, repeats)
    r = times[:, 1] / times[:, 0]
    old_ms, new_ms = (1e3 * np.median(times[:, i]) / batch for i in (0, 1))
    return (f"| {name} | {batch} | {old_ms:.3f} | {new_ms:.3f} | {np.median(r):.3f} "
            f"[{r.min():.3f}, {r.max():.3f}] |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(SHAPES), choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-layers", action="store_true", help="the whole network only")
    args = parser.parse_args()
    load = lambda: " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; jax "
          f"{jax.__version__}; load average {load()}")
    if not args.no_layers:
        print("| network | layer kind | old fwd+bwd (ms) | share of old | new (ms) | "
              "new / old, median [range] |")
        print("|---|---|---|---|---|---|")
        for name in args.cases:
            rows, total = bench_layers(name, args.batch, args.calls, args.repeats)
            print("\n".join(rows) + f"\n| {name} | sum of the layers | {total:.1f} | | | |",
                  flush=True)
    print("| network | batch | old bare pass (ms/example) | new (ms/example) | "
          "new / old, median [range] |")
    print("|---|---|---|---|---|")
    for name in args.cases:
        print(bench_network(name, args.batch, args.calls, args.repeats), flush=True)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
