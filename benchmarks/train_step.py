"""Training-step overhead: the full ``jax.pmap``'d train step against a bare forward+backward.

For each case (the residual MLP on the 16-D Gaussian pair, the tiny U-Net on the 8x8 digits)
with the config the experiments use:

* ``t_step``: one call of ``trainer.make_train_step`` compiled with ``jax.pmap`` over
  the local devices, as ``train_and_evaluate`` runs it (noise and times drawn per example, the
  loss of ``sde_lib.get_loss_fn``, gradients averaged with ``lax.pmean``, global-norm clipping,
  Adam, the EMA);
* ``t_bare``: ``jax.jit(jax.value_and_grad(...))`` of the mean squared error of the same network
  on the same batch and times, nothing else;
* ``ratio = t_step / t_bare`` (goal <= 1.10) and the training throughput ``batch / t_step``;
  the step is timed with the batch already on the devices, fed from host numpy arrays each
  call (``host-fed``) and fed as the trainer feeds it, each numpy batch transferred one call
  ahead with ``jax.device_put`` (``prefetched``);
* with ``--steps-per-call K``, K steps per compiled call (``lax.scan``, unrolled where the
  trainer unrolls it: ``trainer.scan_unroll``; ``--no-unroll`` keeps the loop), times per step.

Both are timed interleaved, ``--repeats`` rounds of ``--calls`` calls each, and the median of
the per-round means is kept (machines here are shared and noisy). Run:
``python -m benchmarks.train_step [--cases mlp unet] [--batch-mlp 4096] [--batch-unet 128]``
and, on an accelerator, ``--cases cifar10`` for the DDPM CIFAR-10 U-Net throughput; results go
in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

import models
import sde_lib
import trainer
from experiments.configs import cifar10, digits_unet, gmm_mlp

CASES = {
    "mlp": (gmm_mlp, (16,)),
    "unet": (digits_unet, (8, 8, 1)),
    "cifar10": (cifar10, (32, 32, 3)),
}


def _round(fn, carry, args, calls):
    """Mean time of ``calls`` calls ``carry = fn(carry, *args)`` and the last carry."""
    start = time.perf_counter()
    for _ in range(calls):
        carry = fn(carry, *args)
    jax.block_until_ready(carry)
    return (time.perf_counter() - start) / calls, carry


def _case(case, batch, dropout=None):
    """``(config, cfg, shape, model, loss_fn)`` of ``case`` at ``batch`` (and ``dropout``)."""
    module, shape = CASES[case]
    config = module.get_config()
    config.training.batch_size = batch
    if dropout is not None:
        config.model.dropout = dropout
    cfg = trainer.validate_config(config)
    model = models.get_model(cfg.model)
    return config, cfg, shape, model, sde_lib.get_loss_fn(cfg.sde.build(), cfg.loss)


def bench(case, batch, calls, repeats, steps_per_call=1, unroll=None, dropout=None):
    config, cfg, shape, model, loss_fn = _case(case, batch, dropout)
    optimizer, schedule = trainer.create_optimizer(cfg.optim)
    state = trainer.create_train_state(jax.random.PRNGKey(0), model, shape, optimizer)
    devices = jax.local_devices()
    D = len(devices)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (batch, *shape)).astype(np.float32)

    K = steps_per_call
    if unroll is None:  # as the trainer chooses (trainer.scan_unroll)
        unroll = trainer.scan_unroll(model, state.params, shape, K)
    step = jax.pmap(trainer.make_train_step(model, loss_fn, optimizer, schedule,
                                            cfg.optim.ema_rate, K,
                                            rng_block_size=cfg.training.rng_block_size,
                                            ema_warmup=cfg.optim.ema_warmup, unroll=unroll),
                    trainer.AXIS, devices=devices, donate_argnums=(0,))
    p_state = jax_utils.replicate(state, devices, axis_name=trainer.AXIS)
    one = {"x": x.reshape(D, batch // D, *shape), "index": np.arange(batch).reshape(D, -1)}
    if K > 1:  # the same batch K times, on a (K,) axis after the device axis
        one = jax.tree.map(lambda a: np.repeat(a[:, None], K, axis=1), one)
    p_batch = jax.pmap(lambda b: b, devices=devices)(one)  # already on the devices
    host_batch = one  # numpy, transferred at each call as the trainer's batches are

    def train_call(s, b):
        return step(s, b)[0]

    t = jnp.asarray(rng.uniform(1e-3, 1.0, (batch,)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(batch, *shape)).astype(np.float32))
    xj = jnp.asarray(x)
    dropout_key = jax.random.PRNGKey(1)

    @jax.jit
    def bare(params):
        def mse(p):
            model_fn = models.get_model_fn(model, p, True, dropout_key)
            return jnp.mean((model_fn(xj, t) - target) ** 2)
        return jax.value_and_grad(mse)(params)

    params = state.params
    start = time.perf_counter()
    p_state = jax.block_until_ready(train_call(p_state, p_batch))  # compile both
    compile_s = time.perf_counter() - start
    jax.block_until_ready(bare(params))
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("batch",)),
                                          jax.sharding.PartitionSpec("batch"))

    def prefetched_round(p_state):
        """``calls`` calls fed as the trainer feeds them: each numpy batch transferred with
        ``jax.device_put`` one call ahead (``trainer.Run.next_batches``)."""
        start = time.perf_counter()
        ahead = jax.device_put(host_batch, sharding)
        for call in range(calls):
            current = ahead
            if call + 1 < calls:
                ahead = jax.device_put(jax.tree.map(np.copy, host_batch), sharding)
            p_state = train_call(p_state, current)
        jax.block_until_ready(p_state)
        return (time.perf_counter() - start) / calls, p_state

    steps, hosts, fetched, bares = [], [], [], []
    for _ in range(repeats):  # the state is donated to the step, as in train_and_evaluate
        t_round, p_state = _round(train_call, p_state, (p_batch,), calls)
        steps.append(t_round / K)
        t_round, p_state = _round(train_call, p_state, (host_batch,), calls)
        hosts.append(t_round / K)
        t_round, p_state = prefetched_round(p_state)
        fetched.append(t_round / K)
        bares.append(_round(lambda c, p: bare(p), None, (params,), calls)[0])
    t_step, t_host, t_fetched, t_bare = (float(np.median(v))
                                         for v in (steps, hosts, fetched, bares))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    dropout = "dropout" if trainer.uses_dropout(model, params, shape) else "no dropout"
    return (f"| {case} ({config.model.name}, {n_params:,} params, {dropout}) | {shape} | "
            f"{batch} | "
            f"{K}{' unrolled' if unroll > 1 else ''} | {compile_s:.1f} | {1e3 * t_step:.2f} | "
            f"{1e3 * t_host:.2f} | {1e3 * t_fetched:.2f} | {1e3 * t_bare:.2f} | "
            f"{t_step / t_bare:.3f} | {t_host / t_bare:.3f} | {t_fetched / t_bare:.3f} | "
            f"{batch / t_step:,.0f} |")


def dropout_paths(case, batch, calls, repeats, dropout=None):
    """The loss gradient of a dropout network (the config's rate) by ``trainer.example_losses``
    (the network once on the batch, each example's masks from its position) against the way it
    was computed before (the whole loss inside a ``jax.vmap`` over the blocks of
    ``rng_block_size`` examples, a dropout key per block), interleaved; ratio new / old."""
    config, cfg, shape, model, loss_fn = _case(case, batch, dropout)
    c = cfg.training.rng_block_size
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), jnp.ones(1))["params"]
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, *shape)), jnp.float32)
    index, key = jnp.arange(batch), jax.random.PRNGKey(1)

    def old(p):
        def one(k, xk):
            k_loss, k_dropout = jax.random.split(jax.random.fold_in(key, k))
            return loss_fn(k_loss, models.get_model_fn(model, p, True, k_dropout), xk)
        return jax.vmap(one)(index[::c] // c, x.reshape(batch // c, c, *shape)).mean()

    def new(p):
        return trainer.example_losses(p, model, loss_fn, key, x, index, c).mean()

    fns = {name: jax.jit(jax.value_and_grad(f)) for name, f in (("new", new), ("old", old))}
    for f in fns.values():
        jax.block_until_ready(f(params))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            times[name].append(_round(lambda carry, p, f=f: f(p), None, (params,), calls)[0])
    ratios = np.array(times["new"]) / np.array(times["old"])
    return (f"| {case} ({config.model.name}, dropout {cfg.model.dropout}) | {batch} | "
            f"{1e3 * np.median(times['old']):.1f} | {1e3 * np.median(times['new']):.1f} | "
            f"{np.median(ratios):.3f} ({ratios.min():.3f}-{ratios.max():.3f}) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["mlp", "unet"], choices=sorted(CASES))
    parser.add_argument("--batch-mlp", type=int, default=4096)
    parser.add_argument("--batch-unet", type=int, default=128)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-call", type=int, nargs="+", default=[1],
                        help="K steps per compiled call (lax.scan); times are per step")
    parser.add_argument("--no-unroll", action="store_true",
                        help="keep the scan's loop even where the trainer unrolls it")
    parser.add_argument("--dropout", type=float, default=None,
                        help="the model's dropout rate instead of the config's")
    parser.add_argument("--dropout-paths", action="store_true",
                        help="only compare the dropout loss gradient's two formulations")
    args = parser.parse_args()
    print(f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; jax "
          f"{jax.__version__}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.dropout_paths:
        print("| case | batch | per-block vmap (ms) | network once (ms) | new / old, median "
              "(range) |\n|---|---|---|---|---|")
        for case in args.cases:
            batch = args.batch_mlp if case == "mlp" else args.batch_unet
            print(dropout_paths(case, batch, args.calls, args.repeats, args.dropout),
                  flush=True)
        return
    print("| case | data | batch | steps per call | compile (s) | train step (ms) | host-fed "
          "step (ms) | prefetched (ms) | bare fwd+bwd (ms) | ratio | host-fed ratio | "
          "prefetched ratio | examples/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        batch = args.batch_mlp if case == "mlp" else args.batch_unet
        for K in args.steps_per_call:
            print(bench(case, batch, args.calls, args.repeats, K,
                        1 if args.no_unroll else None, args.dropout), flush=True)


if __name__ == "__main__":
    main()
