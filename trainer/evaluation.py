"""Evaluation of a run's parameters (test loss, bits/dim, a sample grid) and the readers of a
training workdir: its config, its score function, its evaluation and its samples."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils

import sde_lib
from trainer import workdirs
from trainer.data import DataState
from trainer.metrics import MetricWriter, save_samples_png
from trainer.reporting import save_npy, save_npz, write_atomic
from trainer.run import Run, open_for_reading
from trainer.step import AXIS


def evaluate_params(run: Run, params, step: int, writer: MetricWriter | None = None
                    ) -> dict[str, float]:
    """Test loss, probability-flow bits/dim and a sample grid for ``params`` (the EMA), each
    phase announced on stderr (``Run.progress``); the grid and its ``.npy`` go to
    ``run.out_dir/samples`` (nothing when it is None) and the grid to ``writer``'s TensorBoard
    images. Vector samples are drawn over held-out data (grey)."""
    cfg, ev, sp = run.cfg, run.cfg.eval, run.cfg.sampling
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.training.seed), 2**31 - 1)
    k_loss, k_ll, k_deq, k_sample = jax.random.split(key, 4)
    p_params = jax_utils.replicate(params, run.devices, axis_name=AXIS)
    p_keys = jax_utils.replicate(k_loss, run.devices, axis_name=AXIS)
    losses = []
    n_batches = min(ev.num_batches, run.eval_it.batches_per_epoch)
    with run.progress(f"step {step}: test loss over {n_batches} batches"):
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
        with run.progress(f"step {step}: probability-flow likelihood of {x.shape[0]} test "
                          f"examples"):
            logp, _ = run.log_likelihood(params, k_ll, x)
            logp = np.asarray(logp)
        if L is not None:
            bpd = np.asarray(sde_lib.bits_per_dim(logp, D, (-1.0, 1.0), L))
            name = "bits_per_dim"
        else:  # continuous data: negative log-density in bits per dimension
            bpd, name = -logp / (D * math.log(2.0)), "nll_bits_per_dim"
        out[name] = float(bpd.mean())
        # over the examples: the spread of the data and of the probes together
        out[f"{name}_se"] = float(bpd.std(ddof=1) / math.sqrt(bpd.size)) if bpd.size > 1 else 0.0
        if L is None:
            gmm = run.eval_it.dataset.gmm
            if gmm is not None:
                out["true_nll_bits_per_dim"] = float(-gmm.log_prob(x).mean() / (D * math.log(2)))
    x, nfe = _draw_announced(run, params, k_sample, step)
    out["sample_nfe"] = float(nfe)
    title = f"{sp.method}, {sp.num_steps} steps, step {step}"
    reference = _held_out(run)
    if writer is not None:
        writer.write_samples(step, x, title, reference)
    if run.is_main and run.out_dir is not None:
        path = os.path.join(run.out_dir, "samples", f"samples_{step}.png")
        run.wrote(save_samples_png(x, path, title, reference))
        run.wrote(save_npy(path[:-4] + ".npy", x))
    return out


def draw_samples(run: Run, params, rng) -> tuple[np.ndarray, int]:
    """``eval.num_samples`` samples of ``sde_lib.sample`` with ``params``: ``(n, *D)``, NFE."""
    x, nfe = run.draw(params, rng)
    return np.asarray(x), int(nfe)


def _draw_announced(run: Run, params, rng, step: int) -> tuple[np.ndarray, int]:
    """``draw_samples`` inside a progress line naming what it draws."""
    sp = run.cfg.sampling
    with run.progress(f"step {step}: {run.cfg.eval.num_samples} samples, {sp.method} with "
                      f"{sp.num_steps} steps"):
        return draw_samples(run, params, rng)


def _held_out(run: Run) -> np.ndarray | None:
    """The first test batch, drawn behind vector samples; None for images."""
    if len(run.data_shape) != 1:
        return None
    return run.eval_it.batch_at(DataState(0, 0))["x"].reshape(-1, *run.data_shape)


def _json_number(value):
    """A metric for JSON: ``None`` (null) for NaN and infinities, which JSON has no value for."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def write_eval(run: Run, writer: MetricWriter | None, step: int, metrics: dict) -> None:
    """The metrics to ``writer`` (TensorBoard and CSV) and ``<out_dir>/eval_<step>.json``."""
    if writer is not None:
        writer.write_scalars(step, metrics, prefix="eval/")
    if run.is_main and run.out_dir is not None:
        record = {"step": step, **{k: _json_number(v) for k, v in metrics.items()}}
        path = os.path.join(run.out_dir, f"eval_{step}.json")
        if run.reading and os.path.exists(path):
            run.say(f"replacing {path}")
        write_atomic(path, json.dumps(record, indent=1, allow_nan=False))
        run.wrote(path)


class Evaluation(dict):
    """The metrics of ``evaluate_workdir`` (a dict), with the ``step`` evaluated and the files
    ``written``."""

    step: int
    written: list[str]


def evaluate_workdir(config, workdir: str, out: str | None = None) -> Evaluation:
    """Evaluates the EMA parameters of the newest intact checkpoint in ``workdir``
    (``--mode eval``), writing nothing there: ``eval_<step>.json`` and the sample grid go to
    ``out`` when given (``--out``; an existing ``eval_<step>.json`` is replaced, and said)."""
    run = open_for_reading(config, workdir)
    run.out_dir = None if out is None else os.fspath(out)
    step = int(run.state.step)
    metrics = evaluate_params(run, run.state.ema_params, step)
    write_eval(run, None, step, metrics)
    result = Evaluation(metrics)
    result.step, result.written = step, run.written
    return result


def saved_config(workdir: str) -> dict:
    """The config a workdir was trained with (its ``config.json``), as sections that
    ``parse_config`` and ``train_and_evaluate`` take.

    Raises:
      FileNotFoundError: the workdir has no ``config.json`` (not a training workdir, or one from
        before the config was saved).
      workdirs.DamagedConfigError: (a ``ValueError``) a ``config.json`` that is not UTF-8
        JSON or not a config, in one line naming it (``workdirs.read_config``).
      ValueError: a ``config.json`` without ``model_name``.
    """
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {workdir}: pass the config it was trained "
                                f"with (a ConfigDict of experiments/configs)")
    record = workdirs.read_config(
        path, "restore it, or pass the config the workdir was trained with (the checkpoints "
              "decide the shapes: a config that does not fit them is refused)")
    if "model_name" not in record:
        raise ValueError(f"{path} does not name its model (written before model_name was "
                         f"saved): pass the config it was trained with")
    config = {k: v for k, v in record.items() if k != "model_name"}
    config["model"] = {**record["model"], "name": record["model_name"]}
    return config


def load_score_fn(workdir: str, config=None, params: str = "ema"):
    """The score function of the latest checkpoint in ``workdir``, for use in Python.

    Example::

        score_fn, sde = trainer.load_score_fn("runs/gmm_mlp")
        x, nfe = sde_lib.sample(jax.random.key(0), sde, score_fn, (512, 16),
                                method="dpm_solver_pp", num_steps=20)

    Args:
      workdir: a training workdir (``trainer.main`` or a study's ``W/model``).
      config: the config it was trained with; default its ``config.json``.
      params: ``"ema"`` (what ``--mode eval`` and ``--mode sample`` use) or ``"raw"`` (the
        parameters of the last step).

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
    run = open_for_reading(saved_config(workdir) if config is None else config, workdir)
    state = run.state
    return run.score_fn(state.ema_params if params == "ema" else state.params), run.sde


SAMPLE_FILES = (".png", ".npy", ".npz")


def sample_workdir(config, workdir: str, out: str | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Samples from the EMA parameters of the newest intact checkpoint (``--mode sample``).

    Args:
      out: a ``.png`` (the grid or scatter plot), ``.npy`` or ``.npz`` (the array, as
        ``samples``) file; or a directory, which gets ``sample_mode_<step>.png`` and ``.npy``
        (default: ``workdir/samples``; pass another for a read-only workdir).

    Returns:
      the samples ``(n, *D)`` and the paths written.
    """
    out = os.path.join(os.fspath(workdir), "samples") if out is None else os.fspath(out)
    run = open_for_reading(config, workdir)
    cfg, step = run.cfg, int(run.state.step)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.training.seed), 2**31 - 2)
    x, _ = _draw_announced(run, run.state.ema_params, key, step)
    stem, ext = os.path.splitext(out)
    if ext not in SAMPLE_FILES:
        stem, ext = os.path.join(out, f"sample_mode_{step}"), None
    title = f"{cfg.sampling.method}, {cfg.sampling.num_steps} steps, checkpoint {step}"
    if run.is_main:
        if ext in (None, ".png"):
            run.wrote(save_samples_png(x, stem + ".png", title, _held_out(run)))
        if ext in (None, ".npy"):
            run.wrote(save_npy(stem + ".npy", x))
        if ext == ".npz":
            run.wrote(save_npz(stem + ".npz", samples=x))
    return x, run.written
