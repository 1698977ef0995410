r"""Training: a ``jax.pmap``'d step over local devices (and across processes), orbax checkpoints
that resume exactly, TensorBoard metrics, sample grids and a final evaluation.

``train_and_evaluate(config, workdir)`` is what ``experiments.main`` runs. One step minimizes the
mean over the global batch of the per-example loss of ``sde_lib.get_loss_fn`` (the score SDE's
denoising score matching, Song et al. 2021 Eq. 7, or DDPM's ``L_simple``, Ho et al. 2020 Eq. 14,
...) with Adam, a linear warmup and global-norm clipping, and keeps an EMA of the parameters
(Ho et al. 2020, Appendix B). The randomness (time, noise, dropout) of example ``j`` of the
global batch at step ``s`` comes from ``fold_in(fold_in(rng, s), j // c)`` only, ``c`` =
``training.rng_block_size``, so the loss and the gradient do not depend on how the batch is split
over devices and processes (up to float summation order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import warnings
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import jax_utils
from jax import lax

import models
import sde_lib
from experiments import checkpointing
from experiments.config_types import (
    SDES,
    ExperimentConfig,
    OptimConfig,
    check_devices,
    distributed_config,
    parse_config,
)
from experiments.data import DataState, create_iterators
from experiments.metrics import MetricWriter, save_loss_png, save_samples_png
from experiments.reporting import save_npy, write_atomic

__all__ = ["SDES", "TrainState", "create_optimizer", "create_train_state", "evaluate",
           "make_train_step", "parse_config", "sample", "train_and_evaluate", "validate_config"]
AXIS = "batch"


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds besides the data position."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema_params: dict
    rng: jax.Array


def validate_config(config) -> ExperimentConfig:
    """``parse_config`` and ``check_devices``: every check, before anything is compiled."""
    cfg = parse_config(config)
    check_devices(cfg)
    return cfg


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

    The init is compiled (the U-Net's eager init dispatches every op on its own: 8.8 s against
    5.0 s compiled on 2 CPU cores)."""
    init_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros((1, *data_shape), jnp.float32)
    params = jax.jit(lambda key: model.init({"params": key}, x, jnp.ones((1,), jnp.float32))[
        "params"])(init_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), ema_params=params, rng=state_rng)


def example_losses(params, model, loss_fn, step_key, x, index, block_size: int = 1,
                   train=True):
    """Per-example losses ``(b,)`` of ``x (b, *D)`` at global positions ``index (b,)``.

    The examples go in blocks of ``block_size`` consecutive global positions; block ``k``
    (positions ``k c .. k c + c - 1``) draws its times, noise and dropout from
    ``fold_in(step_key, k)``, so the losses do not depend on how the global batch is split as
    long as each device's share is a multiple of ``c``.

    A ``sde_lib.losses.LossFn`` (what ``get_loss_fn`` returns) draws per block (``jax.vmap``
    of ``loss_fn.draw``) and evaluates the network once on the whole batch: a network applied
    inside the vmap runs on 3-D arrays ``(blocks, c, features)``, which XLA:CPU computes about
    20% slower than the same products and norms on 2-D ones (the MLP's loss gradient 112-121 ms
    against 94 ms unvmapped, batch 4096, 2 cores). A network with dropout in training
    (``uses_dropout``) and a plain loss function keep the whole loss in the vmap, so that the
    dropout masks are drawn per block too.
    """
    b = x.shape[0]
    if b % block_size:
        raise ValueError(f"the per-device batch {b} must be a multiple of block_size "
                         f"{block_size}")

    def keys(k):
        return jax.random.split(jax.random.fold_in(step_key, k))

    block_index = index[::block_size] // block_size
    blocks = x.reshape(b // block_size, block_size, *x.shape[1:])
    if isinstance(loss_fn, sde_lib.losses.LossFn) and not (
            train and uses_dropout(model, params, x.shape[1:])):
        draws = jax.vmap(lambda k, xk: loss_fn.draw(keys(k)[0], xk))(block_index, blocks)
        draws = jax.tree.map(lambda a: a.reshape(b, *a.shape[2:]), draws)
        # no dropout: the key is never used; train=train keeps the model's mode as asked
        model_fn = models.get_model_fn(model, params, train, step_key if train else None)
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


def uses_convolution(model, params, data_shape) -> bool:
    """Whether ``model`` (with ``params``) convolves: a ``conv_general_dilated`` in its jaxpr."""
    x, t = jnp.zeros((1, *data_shape), jnp.float32), jnp.ones((1,), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x, t))(params)
    return "conv_general_dilated" in str(jaxpr)


def scan_unroll(model, params, data_shape, steps_per_call: int) -> int:
    """How far ``make_train_step`` unrolls its scan of ``steps_per_call`` steps: fully for a
    convolutional model on CPU, else not at all.

    XLA:CPU runs convolution gradients inside a loop body on a slow path: the digits U-Net took
    3,442 ms per step scanned two steps per call against 130 ms at one step per call (2 cores,
    batch 128); unrolled, 122 ms at 2 and 112 ms at 10 steps per call, at the price of compile
    time growing with the steps (75 s at 10 against 10 s at 1). The MLP and the Transformer are
    not affected and keep the loop.
    """
    if steps_per_call == 1 or jax.default_backend() != "cpu":
        return 1
    return steps_per_call if uses_convolution(model, params, data_shape) else 1


def make_train_step(model, loss_fn, optimizer, schedule, ema_rate: float,
                    steps_per_call: int = 1, axis_name: str | None = AXIS,
                    block_size: int = 8, ema_warmup: int | None = None,
                    unroll: int = 1) -> Callable:
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
                                  batch["index"], block_size).mean()

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
                   block_size: int = 8) -> Callable:
    """``eval_step(params, key, batch) -> mean loss`` over the global batch (no dropout)."""
    def eval_step(params, key, batch):
        loss = example_losses(params, model, loss_fn, key, batch["x"], batch["index"],
                              block_size, train=False).mean()
        return loss if axis_name is None else lax.pmean(loss, axis_name)

    return eval_step


def initialize_distributed(config) -> None:
    """``jax.distributed.initialize`` when a coordinator is configured (the ``distributed``
    section of ``config``, or the environment).

    Runs first, before the config is checked (checking builds the SDE, which touches the
    backend, and ``jax.distributed.initialize`` must come before any backend use); on CPU,
    collectives across processes use gloo.
    """
    dist = distributed_config(config).resolved()
    if dist.coordinator_address is None or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)


class ConfigChangeWarning(UserWarning):
    """A run resumes with config fields changed that do not change the model, its data or its
    objective (steps, intervals, learning rate, evaluation)."""


class _Run:
    """The objects of one run, built from a checked config (devices, data, model, steps)."""

    def __init__(self, cfg: ExperimentConfig, workdir: str, reading: bool = False):
        # reading: evaluate, sample or load_score_fn (the workdir's config.json is left as is)
        self.cfg, self.workdir, self.reading = cfg, os.fspath(workdir), reading
        self.num_devices = check_devices(cfg)
        # pmap spans the first num_devices devices of every process (the same list everywhere)
        self.pmap_devices = [d for p in range(jax.process_count())
                             for d in sorted((d for d in jax.devices() if d.process_index == p),
                                             key=lambda d: d.id)[:self.num_devices]]
        self.devices = [d for d in self.pmap_devices if d.process_index == jax.process_index()]
        self.sde = cfg.sde.build()
        self.model = models.get_model(cfg.model)
        self.loss_fn = sde_lib.get_loss_fn(self.sde, cfg.loss)
        self.optimizer, self.schedule = create_optimizer(cfg.optim)
        self.train_it, self.eval_it = create_iterators(
            cfg.data, cfg.training.batch_size, cfg.eval.batch_size, num_devices=self.num_devices)
        self.data_shape = self.train_it.dataset.data_shape
        self.state = create_train_state(jax.random.PRNGKey(cfg.training.seed), self.model,
                                        self.data_shape, self.optimizer)
        # the lock before the manager, whose creation removes unfinished saves in the workdir
        self.lock = checkpointing.WorkdirLock(self.workdir).acquire()
        try:
            self.manager = checkpointing.create_manager(self.workdir,
                                                        cfg.training.keep_checkpoints)
            self.config_changes = checkpointing.check_config(
                self.workdir, dataclasses.asdict(cfg), self.manager.latest_step() is not None)
        except BaseException:
            self.lock.release()
            raise
        for change in self.config_changes:
            verb = "reading" if reading else "resuming"
            warnings.warn(f"{verb} {self.workdir} with a changed config field: {change}",
                          ConfigChangeWarning, stacklevel=3)
        self.is_main = jax.process_index() == 0

    # the evaluation's compiled functions, built once per run (params are arguments)
    @functools.cached_property
    def eval_step(self):
        return jax.pmap(make_eval_step(self.model, self.loss_fn,
                                       block_size=self.cfg.training.rng_block_size), AXIS,
                        devices=self.pmap_devices)

    def score_fn(self, params):
        return models.get_score_fn(self.sde, self.model, params, self.cfg.loss.parameterization)

    @functools.cached_property
    def log_likelihood(self):
        ev = self.cfg.eval
        return jax.jit(lambda params, rng, x: sde_lib.log_likelihood(
            rng, self.sde, self.score_fn(params), x, ev.likelihood_eps, ev.divergence, ev.rtol,
            ev.atol))

    @functools.cached_property
    def draw(self):
        """``draw(params, rng) -> (x, nfe)``: ``eval.num_samples`` samples of the config's
        sampler."""
        sp, shape = self.cfg.sampling, (self.cfg.eval.num_samples, *self.data_shape)
        return jax.jit(lambda params, rng: sde_lib.sample(
            rng, self.sde, self.score_fn(params), shape, sp.method, sp.num_steps, sp.eps,
            **sp.options))

    def restore(self, required: bool = False) -> bool:
        """Restores the newest intact checkpoint (if any), then (when training) saves the config
        beside it."""
        state, data_state = checkpointing.restore_checkpoint(self.manager, self.state)
        if state is None and required:
            raise FileNotFoundError(
                f"no checkpoint in {checkpointing.checkpoint_dir(self.workdir)}")
        if not self.reading:
            checkpointing.save_config(self.workdir, dataclasses.asdict(self.cfg))
        if state is None:
            return False
        self.state = jax.tree.map(jnp.asarray, state)
        self.train_it.restore(data_state)
        return True

    def index(self, it) -> np.ndarray:
        """Global positions ``(D, b)`` of this process's examples in a batch of ``it``."""
        share = it.global_batch_size // it.process_count
        start = it.process_index * share
        return np.arange(start, start + share).reshape(self.num_devices, -1)

    def next_batches(self, num_calls: int):
        """The training batches of ``num_calls`` calls, each on this process's devices with the
        data state after it (what a checkpoint taken after that call records), read one call
        ahead: the next call's batch is read and transferred (``jax.device_put``, which
        returns at once) while the current call runs, as flax's ``prefetch_to_device``."""
        mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))

        def read():
            return jax.device_put(self.next_batch(), sharding), self.train_it.state

        ahead = read() if num_calls > 0 else None
        for call in range(num_calls):
            current, ahead = ahead, (read() if call + 1 < num_calls else None)
            yield current

    def next_batch(self) -> dict:
        K = self.cfg.training.steps_per_call
        index = self.index(self.train_it)
        batches = [{"x": next(self.train_it)["x"], "index": index} for _ in range(K)]
        if K == 1:
            return batches[0]
        return jax.tree.map(lambda *a: np.stack(a, axis=1), *batches)


def unreplicate(tree):
    """Device 0's copy of each leaf of a ``pmap`` output (``flax.jax_utils.unreplicate`` keeps
    the device axis when one device is used out of several)."""
    return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)


def _crossed(old: int, new: int, every: int) -> bool:
    return new // every > old // every


def evaluate_params(run: _Run, params, step: int) -> dict[str, float]:
    """Test loss, probability-flow bits/dim and a sample grid for ``params`` (the EMA)."""
    cfg, ev, sp = run.cfg, run.cfg.eval, run.cfg.sampling
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.training.seed), 2**31 - 1)
    k_loss, k_ll, k_deq, k_sample = jax.random.split(key, 4)
    p_params = jax_utils.replicate(params, run.devices, axis_name=AXIS)
    p_keys = jax_utils.replicate(k_loss, run.devices, axis_name=AXIS)
    losses = []
    n_batches = min(ev.num_batches, run.eval_it.batches_per_epoch)
    for k in range(n_batches):
        x = run.eval_it.batch_at(DataState(0, k))["x"]
        index = run.index(run.eval_it) + k * run.eval_it.global_batch_size
        losses.append(float(run.eval_step(p_params, p_keys, {"x": x, "index": index})[0]))
    out = {"test_loss": float(np.mean(losses))}
    D = math.prod(run.data_shape)
    if ev.likelihood:
        x = run.eval_it.batch_at(DataState(0, 0))["x"].reshape(-1, *run.data_shape)
        x = jnp.asarray(x[:ev.likelihood_examples])
        L = run.eval_it.dataset.num_levels
        if L is not None and not cfg.data.dequantize:  # levels 2 v / (L - 1) - 1 -> v + u
            v = jnp.round((x + 1.0) * (L - 1) / 2.0)
            x = sde_lib.uniform_dequantize(k_deq, v, (-1.0, 1.0), L).astype(jnp.float32)
        logp, _ = run.log_likelihood(params, k_ll, x)
        if L is not None:
            out["bits_per_dim"] = float(sde_lib.bits_per_dim(logp, D, (-1.0, 1.0), L).mean())
        else:  # continuous data: negative log-density in bits per dimension
            out["nll_bits_per_dim"] = float(-logp.mean() / (D * math.log(2.0)))
            gmm = run.eval_it.dataset.gmm
            if gmm is not None:
                out["true_nll_bits_per_dim"] = float(-gmm.log_prob(x).mean() / (D * math.log(2)))
    x, nfe = draw_samples(run, params, k_sample)
    out["sample_nfe"] = float(nfe)
    if run.is_main:
        path = os.path.join(run.workdir, "samples", f"samples_{step}.png")
        save_samples_png(x, path, f"{sp.method}, step {step}")
        save_npy(os.path.join(run.workdir, "samples", f"samples_{step}.npy"), x)
    return out


def draw_samples(run: _Run, params, rng) -> tuple[np.ndarray, int]:
    """``eval.num_samples`` samples of ``sde_lib.sample`` with ``params``: ``(n, *D)``, NFE."""
    x, nfe = run.draw(params, rng)
    return np.asarray(x), int(nfe)


class _FiniteGuard:
    """Stops a run at a non-finite training loss or gradient norm (checked at each log and
    checkpoint, before anything is saved) and before a non-finite train state is saved, so the
    checkpoints on disk stay good and are never rotated out by bad ones."""

    def __init__(self, step: int, manager):
        self.step, self.pending, self.manager = step, [], manager

    def add(self, metrics) -> None:
        self.pending.append((metrics["loss"][0], metrics["grad_norm"][0]))

    def _stop(self, what: str) -> None:
        saved = self.manager.latest_step()
        raise FloatingPointError(
            f"{what}; the run stopped before saving it (newest checkpoint: "
            f"{'none' if saved is None else f'step {saved}'}, intact). Lower optim.lr, enable "
            f"optim.grad_clip or check the data, then resume.")

    def check(self) -> None:
        for loss, norm in self.pending:
            loss, norm = np.ravel(np.asarray(loss)), np.ravel(np.asarray(norm))
            bad = ~(np.isfinite(loss) & np.isfinite(norm))
            if bad.any():
                k = int(np.argmax(bad))
                self._stop(f"training loss {loss[k]} / gradient norm {norm[k]} at step "
                           f"{self.step + k + 1} is not finite")
            self.step += loss.size
        self.pending = []

    def check_state(self, state, step: int) -> None:
        if not all(bool(np.all(np.isfinite(np.asarray(leaf))))
                   for leaf in jax.tree.leaves((state.params, state.ema_params))):
            self._stop(f"the parameters after step {step} are not finite")


def _json_number(value):
    """A metric for JSON: ``None`` (null) for NaN and infinities, which JSON has no value for."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _write_eval(run: _Run, writer: MetricWriter, step: int, metrics: dict) -> None:
    writer.write_scalars(step, metrics, prefix="eval/")
    if run.is_main:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        write_atomic(os.path.join(run.workdir, f"eval_{step}.json"),
                     json.dumps(record, indent=1, allow_nan=False))


def train_and_evaluate(config, workdir: str, on_checkpoint: Callable[[int], None] | None = None
                       ) -> dict:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint, then evaluates.

    Args:
      config: a ConfigDict of ``experiments/configs`` (or a mapping of its sections).
      workdir: checkpoints in ``workdir/checkpoints``, TensorBoard events in
        ``workdir/tensorboard``, sample grids in ``workdir/samples``, ``eval_<step>.json``.
      on_checkpoint: called with the step after each checkpoint is on disk.

    Returns:
      ``{"state": the final TrainState, "train_loss": (steps run here,) losses, "eval": dict,
      "score_fn": the EMA parameters' score function, "sde": the SDE, "dataset": the training
      split (its ``gmm`` is the exact law of synthetic data)}``. A run already at
      ``num_train_steps`` only evaluates (``train_loss`` is then empty).

    Raises:
      ValueError: a bad config (see ``parse_config`` and ``check_devices``), before compiling,
        or a checkpoint that does not fit it.
      RuntimeError: another run holds the workdir (``checkpointing.WorkdirLock``).
      FloatingPointError: a non-finite loss, gradient norm or parameters (nothing is saved).
    """
    initialize_distributed(config)
    cfg = parse_config(config)
    run = _Run(cfg, workdir)
    try:
        return _train_and_evaluate(run, on_checkpoint)
    finally:
        run.lock.release()


def _train_and_evaluate(run, on_checkpoint):
    from tqdm import tqdm

    cfg = run.cfg
    if run.restore() and run.is_main:
        print(f"resumed {run.workdir} from step {int(run.state.step)}", flush=True)
    t = cfg.training
    p_step = jax.pmap(make_train_step(run.model, run.loss_fn, run.optimizer, run.schedule,
                                      cfg.optim.ema_rate, t.steps_per_call,
                                      block_size=t.rng_block_size,
                                      ema_warmup=cfg.optim.ema_warmup,
                                      unroll=scan_unroll(run.model, run.state.params,
                                                         run.data_shape, t.steps_per_call)),
                      AXIS, devices=run.pmap_devices, donate_argnums=(0,))
    p_state = jax_utils.replicate(run.state, run.devices, axis_name=AXIS)
    writer = MetricWriter(os.path.join(run.workdir, "tensorboard"), run.is_main,
                          csv_path=os.path.join(run.workdir, "metrics.csv"),
                          resume_step=int(run.state.step))
    step, losses = int(run.state.step), []
    guard = _FiniteGuard(step, run.manager)
    feed = run.next_batches(-(-(t.num_train_steps - step) // t.steps_per_call))
    with tqdm(total=t.num_train_steps, initial=step, disable=not run.is_main,
              desc="train") as bar:
        for batch, data_state in feed:
            p_state, metrics = p_step(p_state, batch)
            new = step + t.steps_per_call
            losses.append(metrics["loss"][0])
            guard.add(metrics)
            if _crossed(step, new, t.log_every) or new == t.num_train_steps:
                guard.check()
                last = {k: float(np.ravel(v[0])[-1]) for k, v in metrics.items()}
                writer.write_scalars(new, last, prefix="train/")
                bar.set_postfix(loss=f"{last['loss']:.4g}")
            unrep = None
            if _crossed(step, new, t.checkpoint_every) or new == t.num_train_steps:
                guard.check()
                unrep = unreplicate(p_state)
                guard.check_state(unrep, new)
                writer.sync()  # the steps logged so far on disk before the checkpoint is
                checkpointing.save_checkpoint(run.manager, unrep, data_state)
                if run.is_main:
                    save_loss_png(writer.csv_path, os.path.join(run.workdir, "loss.png"))
                if on_checkpoint is not None:
                    on_checkpoint(new)
            if new < t.num_train_steps and (_crossed(step, new, t.eval_every)
                                            or _crossed(step, new, t.sample_every)):
                if unrep is None:
                    unrep = unreplicate(p_state)
                _write_eval(run, writer, new, evaluate_params(run, unrep.ema_params, new))
            bar.update(new - step)
            step = new
    run.state = unreplicate(p_state)
    metrics = evaluate_params(run, run.state.ema_params, step)
    _write_eval(run, writer, step, metrics)
    writer.close()
    if run.is_main:
        save_loss_png(writer.csv_path, os.path.join(run.workdir, "loss.png"))
    train_loss = np.concatenate([np.ravel(np.asarray(v)) for v in losses]) if losses else \
        np.zeros((0,))
    return {"state": run.state, "train_loss": train_loss, "eval": metrics,
            "score_fn": run.score_fn(run.state.ema_params), "sde": run.sde,
            "dataset": run.train_it.dataset}


@contextlib.contextmanager
def _reading(config, workdir: str):
    """The run of ``workdir``'s latest checkpoint, restored for reading (eval, sample,
    ``load_score_fn``), its lock held inside the block."""
    initialize_distributed(config)
    run = _Run(parse_config(config), workdir, reading=True)
    try:
        run.restore(required=True)
        yield run
    finally:
        run.lock.release()


def evaluate(config, workdir: str) -> dict[str, float]:
    """Evaluates the EMA parameters of the latest checkpoint in ``workdir`` (``--mode eval``)."""
    with _reading(config, workdir) as run:
        step = int(run.state.step)
        metrics = evaluate_params(run, run.state.ema_params, step)
        writer = MetricWriter(os.path.join(run.workdir, "tensorboard"), run.is_main)
        _write_eval(run, writer, step, metrics)
        writer.close()
    return metrics


def saved_config(workdir: str) -> dict:
    """The config a workdir was trained with (its ``config.json``), as sections that
    ``parse_config`` and ``train_and_evaluate`` take.

    Raises:
      FileNotFoundError: the workdir has no ``config.json`` (not a training workdir, or one from
        before the config was saved).
    """
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {workdir}: pass the config it was trained "
                                f"with (a ConfigDict of experiments/configs)")
    with open(path) as f:
        record = json.load(f)
    if "model_name" not in record:
        raise ValueError(f"{path} does not name its model (written before model_name was "
                         f"saved): pass the config it was trained with")
    config = {k: v for k, v in record.items() if k != "model_name"}
    config["model"] = {**record["model"], "name": record["model_name"]}
    return config


def load_score_fn(workdir: str, config=None, params: str = "ema"):
    """The score function of the latest checkpoint in ``workdir``, for use in Python.

    Example::

        score_fn, sde = train.load_score_fn("runs/gmm_mlp")
        x, nfe = sde_lib.sample(jax.random.key(0), sde, score_fn, (512, 16),
                                method="dpm_solver_pp", num_steps=20)

    Args:
      workdir: a training workdir (``experiments.main`` or a module's ``W/model``).
      config: the config it was trained with; default its ``config.json``.
      params: ``"ema"`` (what ``--mode eval`` and ``sample`` use) or ``"raw"`` (the parameters
        of the last step).

    Returns:
      ``(score_fn, sde)``: ``score_fn(x, t) -> (B, *D)`` (the network through its
      parameterization, ``models.get_score_fn``) and the SDE it was trained on.

    Raises:
      ValueError: ``params`` not ``"ema"`` or ``"raw"``; a config that does not fit.
      FileNotFoundError: no checkpoint (or no config.json and no ``config``).
      RuntimeError: a run holds the workdir (its lock is taken while the checkpoint is read).
    """
    if params not in ("ema", "raw"):
        raise ValueError(f"params must be 'ema' or 'raw', got {params!r}")
    with _reading(saved_config(workdir) if config is None else config, workdir) as run:
        state = run.state
    return run.score_fn(state.ema_params if params == "ema" else state.params), run.sde


def sample(config, workdir: str) -> tuple[np.ndarray, str]:
    """Samples from the EMA parameters of the latest checkpoint (``--mode sample``); writes
    ``workdir/samples/sample_mode_<step>.{png,npy}`` and returns the samples ``(n, *D)`` and
    the path of the ``.npy``."""
    with _reading(config, workdir) as run:
        cfg, step = run.cfg, int(run.state.step)
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.training.seed), 2**31 - 2)
        x, _ = draw_samples(run, run.state.ema_params, key)
        path = os.path.join(run.workdir, "samples", f"sample_mode_{step}.png")
        if run.is_main:
            save_samples_png(x, path, f"{cfg.sampling.method}, step {step}")
            save_npy(path[:-4] + ".npy", x)
    return x, path[:-4] + ".npy"
