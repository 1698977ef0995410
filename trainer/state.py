"""The train state, its optimizer and the EMA of the parameters.

Adam with a linear warmup and global-norm clipping; the EMA of the parameters follows Ho et al.
2020, Appendix B, with TensorFlow's ``num_updates`` warm-up (``ema_decay``).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from trainer.config import OptimConfig


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds besides the data position."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema_params: dict
    rng: jax.Array


def create_optimizer(optim: OptimConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam with ``lr`` reached linearly over ``warmup_steps``, after global-norm clipping."""
    schedule = (optax.linear_schedule(0.0, optim.lr, optim.warmup_steps) if optim.warmup_steps
                else optax.constant_schedule(optim.lr))
    adam = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.adam_eps)
    if optim.grad_clip is None:
        return adam, schedule
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam), schedule


def create_train_state(rng: jax.Array, model, data_shape: tuple[int, ...],
                       optimizer: optax.GradientTransformation) -> TrainState:
    """Initial state: ``model.init`` on a dummy batch ``(1, *data_shape)``; EMA = params.

    The init is compiled: eagerly, the U-Net's init dispatches every op on its own."""
    init_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros((1, *data_shape), jnp.float32)
    params = jax.jit(lambda key: model.init({"params": key}, x, jnp.ones((1,), jnp.float32))[
        "params"])(init_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), ema_params=params, rng=state_rng)


def ema_decay(step, ema_rate: float, ema_warmup: int | None):
    """The EMA's rate at the update from step ``step`` to ``step + 1``:
    ``min(ema_rate, (1 + step) / (ema_warmup + step))``, or ``ema_rate`` when ``ema_warmup`` is
    None.

    With warm-up the average forgets the initial weights as fast as training moves away from
    them: the weight left on the initial parameters after ``n`` updates is
    ``prod_s (1 + s) / (w + s) ~ (w - 1)! / n^(w - 1)`` until ``n ~ w / (1 - ema_rate)``
    (9,000 steps for ``ema_rate = 0.999, w = 10``), where the plain EMA leaves ``ema_rate^n``
    (74% after 300 steps at 0.999). (The ``num_updates`` form of TensorFlow's
    ``ExponentialMovingAverage``.)
    """
    if ema_warmup is None:
        return ema_rate  # a Python float, as weakly typed in the update as before warm-up
    s = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(ema_rate), (1.0 + s) / (ema_warmup + s))
