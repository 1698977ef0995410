r"""The pure training and evaluation steps, to be ``jax.pmap``'d over devices (and processes).

One step minimizes the mean over the global batch of the per-example loss of
``sde_lib.get_loss_fn`` (the score SDE's denoising score matching, Song et al. 2021 Eq. 7, or
DDPM's ``L_simple``, Ho et al. 2020 Eq. 14, ...). The randomness (time, noise, dropout) of example
``j`` of the global batch at step ``s`` comes from ``fold_in(fold_in(rng, s), j // c)`` only,
``c`` = ``training.rng_block_size``, so the loss and the gradient do not depend on how the batch
is split over devices and processes (up to float summation order).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

import models
import sde_lib
from trainer.config import TrainingConfig
from trainer.state import TrainState, ema_decay

AXIS = "batch"
# fold_in(step_key, DROPOUT_STREAM) is the step's dropout key; the blocks of examples take
# fold_in(step_key, k) for their times and noise, k = global position // rng_block_size < 2^32 - 1
DROPOUT_STREAM = 2**32 - 1


def example_losses(params, model, loss_fn, step_key, x, index, rng_block_size: int,
                   train=True):
    """Per-example losses ``(b,)`` of ``x (b, *D)`` at global positions ``index (b,)``.

    The examples go in blocks of ``rng_block_size`` consecutive global positions; block ``k``
    (positions ``k c .. k c + c - 1``) draws its times, noise and dropout from
    ``fold_in(step_key, k)``, so the losses do not depend on how the global batch is split as
    long as each device's share is a multiple of ``c``.

    A ``sde_lib.losses.LossFn`` (what ``get_loss_fn`` returns) draws per block (``jax.vmap``
    of ``loss_fn.draw``) and evaluates the network once on the whole batch: a network applied
    inside the vmap runs on 3-D arrays ``(blocks, c, features)``, which XLA:CPU computes more
    slowly than the same products and norms on 2-D ones (benchmarks/README.md). Dropout masks
    are the example's own: drawn from ``fold_in(step_key, DROPOUT_STREAM)`` and the example's
    global position (``models.dropout``), so they too are split-invariant. A plain loss
    function (not a ``LossFn``) keeps the whole loss in the vmap over blocks, with the block's
    own dropout key.
    """
    b = x.shape[0]
    if b % rng_block_size:
        raise ValueError(f"the per-device batch {b} must be a multiple of rng_block_size "
                         f"{rng_block_size}")

    def keys(k):
        return jax.random.split(jax.random.fold_in(step_key, k))

    block_index = index[::rng_block_size] // rng_block_size
    blocks = x.reshape(b // rng_block_size, rng_block_size, *x.shape[1:])
    if isinstance(loss_fn, sde_lib.losses.LossFn):
        draws = jax.vmap(lambda k, xk: loss_fn.draw(keys(k)[0], xk))(block_index, blocks)
        draws = jax.tree.map(lambda a: a.reshape(b, *a.shape[2:]), draws)
        model_fn = models.get_model_fn(
            model, params, train, jax.random.fold_in(step_key, DROPOUT_STREAM) if train else None,
            example_ids=index if train else None)
        return loss_fn.evaluate(model_fn, x, draws)

    def one(k, xk):
        k_loss, k_dropout = keys(k)
        model_fn = models.get_model_fn(model, params, train, k_dropout if train else None)
        return loss_fn(k_loss, model_fn, xk)

    return jax.vmap(one)(block_index, blocks).reshape(b)


def uses_dropout(model, params, data_shape) -> bool:
    """Whether ``model`` draws random numbers when applied with ``train=True`` (dropout with a
    positive rate): a random-number primitive in its jaxpr."""
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                          params)
    x, t = jnp.zeros((1, *data_shape), jnp.float32), jnp.ones((1,), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply(
        {"params": p}, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(0)}))(shapes))
    return any(name in jaxpr for name in ("random_bits", "threefry2x32", "rng_bit_generator"))


def uses_convolution(model, params, data_shape) -> bool:
    """Whether ``model`` (with ``params``) convolves: a ``conv_general_dilated`` in its jaxpr."""
    x, t = jnp.zeros((1, *data_shape), jnp.float32), jnp.ones((1,), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x, t))(params)
    return "conv_general_dilated" in str(jaxpr)


def scan_unroll(model, params, data_shape, steps_per_call: int) -> int:
    """How far ``make_train_step`` unrolls its scan of ``steps_per_call`` steps: fully for a
    convolutional model on CPU, else not at all.

    XLA:CPU runs convolution gradients inside a loop body on a slow path; unrolled, the steps
    run at the speed of single-step calls, at the price of compile time growing with the steps.
    The MLP and the Transformer are not affected and keep the loop.
    """
    if steps_per_call == 1 or jax.default_backend() != "cpu":
        return 1
    return steps_per_call if uses_convolution(model, params, data_shape) else 1


def make_train_step(model, loss_fn, optimizer, schedule, ema_rate: float,
                    steps_per_call: int = 1, axis_name: str | None = AXIS,
                    rng_block_size: int = TrainingConfig.rng_block_size,
                    ema_warmup: int | None = None, unroll: int = 1) -> Callable:
    """``train_step(state, batch) -> (state, metrics)``, pure, to be ``jax.pmap``'d.

    ``batch`` is ``{"x": (b, *D), "index": (b,)}`` (with a leading ``(K,)`` axis for
    ``steps_per_call = K > 1``, scanned with ``lax.scan``, unrolled ``unroll`` steps at a time:
    see ``scan_unroll``); the loss and gradients are averaged over ``axis_name`` with
    ``lax.pmean``. The EMA is ``ema <- r ema + (1 - r) params`` with
    ``r = ema_decay(step, ema_rate, ema_warmup)``.
    """
    def pmean(x):
        return x if axis_name is None else lax.pmean(x, axis_name)

    def step(state: TrainState, batch):
        step_key = jax.random.fold_in(state.rng, state.step)

        def mean_loss(params):
            return example_losses(params, model, loss_fn, step_key, batch["x"],
                                  batch["index"], rng_block_size).mean()

        loss, grads = jax.value_and_grad(mean_loss)(state.params)
        loss, grads = pmean(loss), pmean(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        r = ema_decay(state.step, ema_rate, ema_warmup)
        ema = jax.tree.map(lambda e, p: r * e + (1.0 - r) * p, state.ema_params, params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": schedule(state.step)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             ema_params=ema), metrics

    if steps_per_call == 1:
        return step
    return lambda state, batches: lax.scan(step, state, batches, unroll=unroll)


def make_eval_step(model, loss_fn, axis_name: str | None = AXIS,
                   rng_block_size: int = TrainingConfig.rng_block_size) -> Callable:
    """``eval_step(params, key, batch) -> mean loss`` over the global batch (no dropout)."""
    def eval_step(params, key, batch):
        loss = example_losses(params, model, loss_fn, key, batch["x"], batch["index"],
                              rng_block_size, train=False).mean()
        return loss if axis_name is None else lax.pmean(loss, axis_name)

    return eval_step
