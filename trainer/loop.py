"""``train_and_evaluate(config, workdir)``: the training loop that ``trainer.main`` runs.

Trains with the pmap'd step of ``trainer.step``, checkpoints with orbax so that a run resumes
exactly, logs metrics (TensorBoard, CSV, loss.png), writes sample grids and evaluates at the end.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np
from flax import jax_utils

from trainer import checkpointing
from trainer.config import parse_config
from trainer.evaluation import evaluate_params, write_eval
from trainer.metrics import MetricWriter, loss_label, save_loss_png
from trainer.preemption import Preempted, StopSignals
from trainer.run import Run, initialize_distributed, unreplicate
from trainer.step import AXIS, make_train_step, scan_unroll


def _crossed(old: int, new: int, every: int) -> bool:
    return new // every > old // every


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


def _checkpoint_path(run, step: int) -> str:
    return os.path.join(checkpointing.checkpoint_dir(run.workdir), str(step))


def train_and_evaluate(config, workdir: str, on_checkpoint: Callable[[int], None] | None = None,
                       restart: bool = False) -> dict:
    """Trains ``config`` in ``workdir``, resuming from its newest intact checkpoint, then
    evaluates.

    SIGTERM and SIGINT stop the run politely (``trainer.preemption``): the current step
    finishes, a checkpoint is saved, the lock is released and ``Preempted`` is raised.

    Args:
      config: a ConfigDict of ``experiments/configs`` (or a mapping of its sections).
      workdir: checkpoints in ``workdir/checkpoints``, TensorBoard events in
        ``workdir/tensorboard``, sample grids in ``workdir/samples``, ``eval_<step>.json``.
      on_checkpoint: called with the step after each checkpoint is on disk.
      restart: start from step 0 when every checkpoint of ``workdir`` is damaged (they stay
        aside as ``<step>.damaged``; the run's metrics are overwritten); without it such a
        workdir is refused.

    Returns:
      ``{"state": the final TrainState, "train_loss": (steps run here,) losses, "eval": dict,
      "written": the files written (checkpoints, evaluations, samples, metrics),
      "score_fn": the EMA parameters' score function, "sde": the SDE, "dataset": the training
      split (its ``gmm`` is the exact law of synthetic data)}``. A run already at
      ``num_train_steps`` only evaluates (``train_loss`` is then empty).

    Raises:
      ValueError: a bad config (see ``parse_config`` and ``check_devices``), before compiling,
        or a checkpoint that does not fit it.
      workdirs.WorkdirInUseError: another run holds the workdir (``workdirs.WorkdirLock``).
      checkpointing.DamagedCheckpointsError: every checkpoint is damaged (and not ``restart``).
      checkpointing.CheckpointSaveError: a checkpoint could not be written (a full disk).
      FloatingPointError: a non-finite loss, gradient norm or parameters (nothing is saved).
      Preempted: SIGTERM or SIGINT; the checkpoint of the step reached is saved.
    """
    initialize_distributed(config)
    cfg = parse_config(config)
    run = Run(cfg, workdir)
    try:
        with StopSignals(run.devices, run.pmap_devices) as signals:
            return _train_and_evaluate(run, on_checkpoint, restart, signals)
    finally:
        run.lock.release()


def _train_and_evaluate(run, on_checkpoint, restart, signals):
    from tqdm import tqdm

    cfg = run.cfg
    if run.restore(restart=restart) and run.is_main:
        print(f"resumed {run.workdir} from step {int(run.state.step)}", flush=True)
    t = cfg.training
    p_step = jax.pmap(make_train_step(run.model, run.loss_fn, run.optimizer, run.schedule,
                                      cfg.optim.ema_rate, t.steps_per_call,
                                      rng_block_size=t.rng_block_size,
                                      ema_warmup=cfg.optim.ema_warmup,
                                      unroll=scan_unroll(run.model, run.state.params,
                                                         run.data_shape, t.steps_per_call)),
                      AXIS, devices=run.pmap_devices, donate_argnums=(0,))
    p_state = jax_utils.replicate(run.state, run.devices, axis_name=AXIS)
    writer = MetricWriter(os.path.join(run.workdir, "tensorboard"), run.is_main,
                          csv_path=os.path.join(run.workdir, "metrics.csv"),
                          resume_step=int(run.state.step), log_every=t.log_every,
                          steps_per_call=t.steps_per_call)
    step, losses = int(run.state.step), []
    loss_name = loss_label(dataclasses.asdict(cfg.loss))
    guard = _FiniteGuard(step, run.manager)
    feed = run.next_batches(-(-(t.num_train_steps - step) // t.steps_per_call))
    with tqdm(total=t.num_train_steps, initial=step, disable=not run.is_main,
              desc=f"train {run.label}") as bar:
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
            signum = signals.poll()
            if _crossed(step, new, t.checkpoint_every) or new == t.num_train_steps or signum:
                guard.check()
                unrep = unreplicate(p_state)
                guard.check_state(unrep, new)
                writer.sync()  # the steps logged so far on disk before the checkpoint is
                run.wrote(_checkpoint_path(run, checkpointing.save_checkpoint(
                    run.manager, unrep, data_state)))
                if run.is_main:
                    save_loss_png(writer.csv_path, os.path.join(run.workdir, "loss.png"), loss_name)
                if on_checkpoint is not None:
                    on_checkpoint(new)
            if signum:
                writer.close()
                raise Preempted(signum, new, _checkpoint_path(run, new))
            if new < t.num_train_steps and (_crossed(step, new, t.eval_every)
                                            or _crossed(step, new, t.sample_every)):
                if unrep is None:
                    unrep = unreplicate(p_state)
                write_eval(run, writer, new, evaluate_params(run, unrep.ema_params, new, writer))
            bar.update(new - step)
            step = new
    run.state = unreplicate(p_state)
    signum = signals.agree()
    if signum:  # during the last call (its checkpoint is saved) or before the first
        writer.close()
        if run.manager.latest_step() != step:
            checkpointing.save_checkpoint(run.manager, run.state, run.train_it.state)
        raise Preempted(signum, step, _checkpoint_path(run, step))
    metrics = evaluate_params(run, run.state.ema_params, step, writer)
    write_eval(run, writer, step, metrics)
    writer.close()
    if run.is_main:
        save_loss_png(writer.csv_path, os.path.join(run.workdir, "loss.png"), loss_name)
    train_loss = np.concatenate([np.ravel(np.asarray(v)) for v in losses]) if losses else \
        np.zeros((0,))
    for path in (writer.csv_path, os.path.join(run.workdir, "loss.png"), writer.logdir):
        if os.path.exists(path):
            run.wrote(path)
    return {"state": run.state, "train_loss": train_loss, "eval": metrics,
            "written": run.written,
            "score_fn": run.score_fn(run.state.ema_params), "sde": run.sde,
            "dataset": run.train_it.dataset}
