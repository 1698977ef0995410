"""In-memory training for the experiment modules: one compiled ``lax.scan`` over optimizer steps.

``fit(rng, sde, model, data_fn, loss_config, ...)`` trains ``model`` on batches drawn by
``data_fn(key, n)`` (fresh mixture samples, or random rows of a small array) with the loss
``sde_lib.get_loss_fn(sde, loss_config)``, Adam with linear warmup and global-norm clipping, and
an EMA of the parameters. It is the single-device, no-checkpoint path used by the experiments,
which train small models for seconds; ``experiments/train.py`` is the full trainer (pmap across
devices and hosts, orbax checkpoints, resume).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import sde_lib


@dataclasses.dataclass(frozen=True)
class FitResult:
    """``params``: the EMA parameters; ``losses``: ``(num_steps,)`` training losses;
    ``seconds``: wall time of the training (compilation included)."""

    params: dict
    losses: np.ndarray
    seconds: float


def fit(rng: jax.Array, sde, model, data_fn: Callable[[jax.Array, int], jax.Array],
        loss_config: sde_lib.LossConfig, data_shape: tuple[int, ...], num_steps: int = 2000,
        batch_size: int = 256, learning_rate: float = 2e-3, ema_rate: float = 0.999,
        warmup_steps: int | None = None, grad_clip: float = 1.0,
        steps_per_call: int = 100) -> FitResult:
    """Trains ``model`` and returns its EMA parameters, the loss curve and the time taken.

    ``steps_per_call`` optimizer steps run in one compiled ``lax.scan`` (the last call may be
    shorter, compiling once more); 1 runs one compiled step per call, which is faster for
    convolutional networks on CPU, where XLA computes convolution gradients slowly inside loops.
    """
    if (num_steps < 1 or batch_size < 1 or steps_per_call < 1 or not learning_rate > 0
            or not 0 <= ema_rate < 1):
        raise ValueError(f"need num_steps, batch_size, steps_per_call >= 1, learning_rate > 0 "
                         f"and ema_rate in [0, 1), got {num_steps}, {batch_size}, "
                         f"{steps_per_call}, {learning_rate}, {ema_rate}")
    loss_fn = sde_lib.get_loss_fn(sde, loss_config)
    key_init, key_steps = jax.random.split(rng)
    params = model.init(key_init, jnp.zeros((1, *data_shape)), jnp.zeros((1,)))["params"]
    warmup = max(num_steps // 20, 1) if warmup_steps is None else warmup_steps
    schedule = optax.linear_schedule(0.0, learning_rate, max(warmup, 1))
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(schedule))

    def step(carry, key):
        params, ema, opt_state = carry
        key_x, key_loss, key_drop = jax.random.split(key, 3)
        x0 = data_fn(key_x, batch_size).astype(jnp.float32)

        def loss(p):
            model_fn = models.get_model_fn(model, p, train=True, rng=key_drop)
            return jnp.mean(loss_fn(key_loss, model_fn, x0))

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: ema_rate * e + (1 - ema_rate) * p, ema, params)
        return (params, ema, opt_state), value

    if steps_per_call == 1:  # no loop in the program (XLA:CPU is slow at conv gradients in one)
        def one_step(carry, keys):
            carry, value = step(carry, keys[0])
            return carry, value[None]

        run = jax.jit(one_step)
    else:
        run = jax.jit(lambda c, keys: jax.lax.scan(step, c, keys))
    start = time.perf_counter()
    carry, losses = (params, params, tx.init(params)), []
    keys = jax.random.split(key_steps, num_steps)
    for first in range(0, num_steps, steps_per_call):
        carry, chunk = run(carry, keys[first:first + steps_per_call])
        losses.append(chunk)
    losses = np.concatenate([np.asarray(c) for c in losses])  # waits for the training
    return FitResult(carry[1], losses, time.perf_counter() - start)


def array_sampler(x: np.ndarray) -> Callable[[jax.Array, int], jax.Array]:
    """``data_fn`` drawing rows of ``x`` uniformly with replacement."""
    x = jnp.asarray(x, jnp.float32)
    return lambda key, n: x[jax.random.randint(key, (n,), 0, x.shape[0])]


def fit_mixture_score(rng: jax.Array, sde, gmm: sde_lib.GaussianMixture, *, train_steps: int,
                      batch_size: int, learning_rate: float, hidden: int, num_blocks: int,
                      loss_config: sde_lib.LossConfig | None = None):
    """The residual MLP trained on fresh samples of ``gmm`` (eps loss unless ``loss_config``);
    returns its EMA ``score_fn`` and the ``FitResult``."""
    loss_config = loss_config or sde_lib.LossConfig(name="eps")
    model = models.get_model("mlp", hidden=hidden, num_blocks=num_blocks)
    result = fit(rng, sde, model, gmm.sample, loss_config, (gmm.dim,), num_steps=train_steps,
                 batch_size=batch_size, learning_rate=learning_rate)
    return models.get_score_fn(sde, model, result.params, loss_config.parameterization), result
