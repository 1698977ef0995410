"""Typed, frozen views of a config's sections, checked before anything is compiled.

``parse_config(config)`` turns an ml_collections ``ConfigDict`` (``experiments/configs/``) into an
``ExperimentConfig`` of frozen dataclasses; below this point no code reads a ConfigDict. The
dataclasses have no defaults of their own: every default lives in ``experiments/configs/base.py``,
and a section or key a config leaves out is taken from there. Strings
become objects in one place each: the SDE here (``SDES``), the model in ``models.get_model``,
the loss in ``sde_lib.get_loss_fn`` and the sampler in ``sde_lib.sample``.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping

import jax

import sde_lib
from experiments.configs import base
from experiments.data import DataConfig
from models import ModelConfig, get_model_config
from sde_lib.losses.config import as_loss_config

SDES = {
    "vp": sde_lib.VPSDE,
    "ddpm": sde_lib.DiscreteVPSDE,  # the DDPM chain as an SDE (beta_min, beta_max, N or betas)
    "subvp": sde_lib.subVPSDE,
    "cosine": sde_lib.CosineVPSDE,
    "ve": sde_lib.VESDE,
    "ou": sde_lib.OrnsteinUhlenbeckSDE,
    "bm": sde_lib.BrownianMotionSDE,
}


@dataclasses.dataclass(frozen=True)
class SDEConfig:
    """``name`` (a key of ``SDES``) and the keyword arguments of its constructor."""

    name: str
    kwargs: Mapping

    def build(self):
        """The SDE object; raises ValueError for an unknown name or bad arguments."""
        if self.name not in SDES:
            raise ValueError(f"sde.name must be one of {sorted(SDES)}, got {self.name!r}")
        try:
            return SDES[self.name](**self.kwargs)
        except TypeError as e:
            raise ValueError(f"bad sde.kwargs {dict(self.kwargs)} for {self.name!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam (Kingma & Ba 2015) with a linear warmup of ``warmup_steps`` to ``lr``, gradients
    clipped to global norm ``grad_clip`` (``None``: no clipping), and a parameter EMA of rate
    ``min(ema_rate, (1 + s) / (ema_warmup + s))`` at step ``s`` (``ema_warmup = None``: the
    constant ``ema_rate``; see ``experiments.train.ema_decay``)."""

    lr: float
    warmup_steps: int
    grad_clip: float | None
    ema_rate: float
    ema_warmup: int | None
    b1: float
    b2: float
    adam_eps: float


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Global ``batch_size``; ``steps_per_call`` steps per compiled call (``lax.scan``);
    ``num_devices`` local devices (``None``: all); the ``*_every`` intervals in steps;
    ``rng_block_size``: each block of that many consecutive examples of the global batch draws
    its randomness from one key (``experiments.train.example_losses``), so every device's share
    must be a multiple of it."""

    batch_size: int
    num_train_steps: int
    steps_per_call: int
    num_devices: int | None
    log_every: int
    eval_every: int
    sample_every: int
    checkpoint_every: int
    keep_checkpoints: int
    seed: int
    rng_block_size: int


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Arguments of ``sde_lib.sample``."""

    method: str
    num_steps: int
    eps: float
    options: Mapping


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Test loss on ``num_batches`` batches of ``batch_size``; probability-flow bits/dim
    (``sde_lib.log_likelihood``) on ``likelihood_examples`` test examples; ``num_samples``."""

    batch_size: int
    num_batches: int
    likelihood: bool
    likelihood_examples: int
    likelihood_eps: float
    divergence: str
    rtol: float
    atol: float
    num_samples: int


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed.initialize`` arguments; ``None`` fields come from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None

    def resolved(self) -> DistributedConfig:
        env = os.environ
        num = self.num_processes if self.num_processes is not None else env.get(
            "JAX_NUM_PROCESSES")
        pid = self.process_id if self.process_id is not None else env.get("JAX_PROCESS_ID")
        return DistributedConfig(self.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"),
                                 None if num is None else int(num),
                                 None if pid is None else int(pid))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig
    model: ModelConfig
    loss: sde_lib.LossConfig
    sde: SDEConfig
    optim: OptimConfig
    training: TrainingConfig
    sampling: SamplingConfig
    eval: EvalConfig
    distributed: DistributedConfig
    model_name: str  # the registry name behind ``model`` (several names share a config class)


def _plain(section) -> dict:
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def _section(config, name: str) -> dict:
    """Section ``name`` of ``config`` over the base config's (the one place defaults live)."""
    defaults = _plain(base.get_base_config()[name]) if name in base.SECTIONS else {}
    return {**defaults, **(_plain(config[name]) if name in config else {})}


def default_section(section: str, /, **overrides):
    """The typed ``section`` (``"data"``, ``"optim"``, ...) of the base config, with
    ``overrides``: ``default_section("data", name="digits")``."""
    if section not in SECTION_TYPES:
        raise ValueError(f"section must be one of {sorted(SECTION_TYPES)}, got {section!r}")
    return _typed(SECTION_TYPES[section], {section: overrides}, section)


SECTION_TYPES = {"data": DataConfig, "sde": SDEConfig, "optim": OptimConfig,
                 "training": TrainingConfig, "sampling": SamplingConfig, "eval": EvalConfig,
                 "distributed": DistributedConfig}


def _typed(cls, config, name: str):
    values = _section(config, name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {name} config keys {unknown}; valid keys are {sorted(fields)}")
    return cls(**values)


def experiment_config(cls, config):
    """The typed ``experiment`` section of an experiment module's config: ``cls`` (a frozen
    dataclass without defaults) built from ``config.experiment``, lists as tuples.

    Raises:
      ValueError: an unknown or missing key, naming the valid ones.
    """
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in _plain(config["experiment"] if "experiment" in config else {}).items()}
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(values) - fields), sorted(fields - set(values))
    if unknown or missing:
        raise ValueError(f"experiment config: unknown keys {unknown}, missing keys {missing}; "
                         f"the keys are {sorted(fields)}")
    return cls(**values)


def _check(name, value, kind, low=None, high=None, low_open=False, optional=False):
    if optional and value is None:
        return
    ok = (not isinstance(value, bool) and isinstance(value, kind)
          and (low is None or (value > low if low_open else value >= low))
          and (high is None or value < high))
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        bound += "" if high is None else f" and < {high}"
        what = "an integer" if kind is numbers.Integral else "a number"
        raise ValueError(f"{name} must be {what}{bound}{' or None' if optional else ''}, got "
                         f"{value!r}")


def distributed_config(config) -> DistributedConfig:
    """The ``distributed`` section alone (read before anything touches the devices)."""
    return _typed(DistributedConfig, config, "distributed")


def parse_config(config) -> ExperimentConfig:
    """The typed config; every name and number checked, nothing compiled and no device touched.

    Raises:
      ValueError: an unknown model, loss, SDE or sampler name (the valid ones are listed), an
        unknown key, or a bad number (e.g. ``optim.lr <= 0``), naming the field.
    """
    model = _section(config, "model")
    if "model" in config and "name" not in config["model"]:
        raise ValueError("model.name is required")
    model_name = model.pop("name")
    model_cfg = get_model_config(model_name, **model)
    sde_cfg = _typed(SDEConfig, config, "sde")
    sde = sde_cfg.build()
    try:  # checks the loss name and its options against the SDE
        loss = as_loss_config(_section(config, "loss"))
        sde_lib.get_loss_fn(sde, loss)
    except ValueError as e:
        raise ValueError(f"bad loss config: loss.{e}") from None
    cfg = ExperimentConfig(
        data=_typed(DataConfig, config, "data"), model=model_cfg, loss=loss, sde=sde_cfg,
        optim=_typed(OptimConfig, config, "optim"),
        training=_typed(TrainingConfig, config, "training"),
        sampling=_typed(SamplingConfig, config, "sampling"),
        eval=_typed(EvalConfig, config, "eval"),
        distributed=_typed(DistributedConfig, config, "distributed"), model_name=model_name)
    o, t, e, s = cfg.optim, cfg.training, cfg.eval, cfg.sampling
    _check("optim.lr", o.lr, numbers.Real, 0, low_open=True)
    _check("optim.warmup_steps", o.warmup_steps, numbers.Integral, 0)
    _check("optim.grad_clip", o.grad_clip, numbers.Real, 0, low_open=True, optional=True)
    _check("optim.ema_rate", o.ema_rate, numbers.Real, 0, 1)
    _check("optim.ema_warmup", o.ema_warmup, numbers.Integral, 1, optional=True)
    _check("optim.b1", o.b1, numbers.Real, 0, 1)
    _check("optim.b2", o.b2, numbers.Real, 0, 1)
    _check("optim.adam_eps", o.adam_eps, numbers.Real, 0, low_open=True)
    for name in ("batch_size", "num_train_steps", "steps_per_call", "log_every", "eval_every",
                 "sample_every", "checkpoint_every", "keep_checkpoints", "rng_block_size"):
        _check(f"training.{name}", getattr(t, name), numbers.Integral, 1)
    _check("training.num_devices", t.num_devices, numbers.Integral, 1, optional=True)
    _check("training.seed", t.seed, numbers.Integral, 0)
    if t.num_train_steps % t.steps_per_call:
        raise ValueError(f"training.num_train_steps ({t.num_train_steps}) must be a multiple of "
                         f"training.steps_per_call ({t.steps_per_call})")
    for name in ("batch_size", "num_batches", "likelihood_examples", "num_samples"):
        _check(f"eval.{name}", getattr(e, name), numbers.Integral, 1)
    if s.method not in sde_lib.SAMPLERS:
        raise ValueError(f"sampling.method must be one of {sorted(sde_lib.SAMPLERS)}, got "
                         f"{s.method!r}")
    if not sde_lib.SAMPLERS[s.method].adaptive:  # checks num_steps, eps, options; traces nothing
        try:
            sde_lib.sampling.build_sampler(sde, None, s.method, s.num_steps, s.eps, **s.options)
        except ValueError as e:
            raise ValueError(f"bad sampling config: {e}") from None
    return cfg


def check_devices(cfg: ExperimentConfig) -> int:
    """The number of local devices to use; the global batch sizes must split evenly over all
    used devices of all processes.

    Raises:
      ValueError: ``training.num_devices`` above the local device count, or a batch size not
        divisible by the total device count times ``training.rng_block_size``.
    """
    local = jax.local_device_count()
    n = cfg.training.num_devices or local
    if n > local:
        raise ValueError(f"training.num_devices must be <= {local} (local devices), got {n}")
    total = n * jax.process_count()
    c = cfg.training.rng_block_size
    for name, size in (("training.batch_size", cfg.training.batch_size),
                       ("eval.batch_size", cfg.eval.batch_size)):
        if size % (total * c):
            raise ValueError(f"{name} ({size}) must be divisible by the number of devices "
                             f"({total} = {jax.process_count()} processes x {n}) times "
                             f"training.rng_block_size ({c}): each device's share is a multiple "
                             f"of the block")
    return n
