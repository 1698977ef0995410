"""Typed, frozen config sections with their defaults and checks: one source of truth per field.

``parse_config(config)`` turns an ml_collections ``ConfigDict`` (``experiments/configs/``) into an
``ExperimentConfig`` of frozen dataclasses; below this point no code reads a ConfigDict. Each
field's default is written once, on its dataclass (the base ConfigDict is derived from them,
``trainer.base``), and its check once, in its metadata (``checked``), run when the section is
built. Strings become objects in one place each: the SDE in ``sde_lib.SDES`` (the one SDE
registry), the model in ``models.get_model``, the loss in ``sde_lib.get_loss_fn`` and the
sampler in ``sde_lib.sample``.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from typing import ClassVar

import jax

import sde_lib
from models import ModelConfig, get_model_config
from sde_lib._validation import closest
from sde_lib.losses.config import as_loss_config
from sde_lib.sampling.driver import EPS as SAMPLER_EPS
from trainer.data import DataConfig

DEFAULT_MODEL = "mlp"  # the model section's default name (a key of models.MODELS)


@dataclasses.dataclass(frozen=True)
class SDEConfig:
    """``name`` (a key of ``sde_lib.SDES``) and the keyword arguments of its constructor."""

    name: str = "vp"
    kwargs: Mapping = dataclasses.field(default_factory=dict)

    def build(self):
        """The SDE object (``sde_lib.get_sde``); ValueError for an unknown name or bad
        arguments, naming the config section."""
        try:
            return sde_lib.get_sde(self.name, **self.kwargs)
        except ValueError as e:
            raise ValueError(f"bad sde config (sde.name, sde.kwargs): {e}") from None


def checked(default, kind, low=None, high=None, low_open=False):
    """A dataclass field with ``default`` whose value must be a ``kind`` (``numbers.Integral`` or
    ``numbers.Real``, never a bool) ``>= low`` (``> low`` with ``low_open``) and ``< high``;
    ``None`` passes when the field's type allows it (``int | None``)."""
    return dataclasses.field(default=default, metadata={"check": (kind, low, high, low_open)})


class _Checked:
    """Runs the ``checked`` fields' checks when a section is built (``section.field`` in the
    message)."""

    SECTION: ClassVar[str]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if "check" in f.metadata:
                kind, low, high, low_open = f.metadata["check"]
                _check(f"{self.SECTION}.{f.name}", getattr(self, f.name), kind, low, high,
                       low_open, optional="None" in str(f.type))


@dataclasses.dataclass(frozen=True)
class OptimConfig(_Checked):
    """Adam (Kingma & Ba 2015) with a linear warmup of ``warmup_steps`` to ``lr``, gradients
    clipped to global norm ``grad_clip`` (``None``: no clipping), and a parameter EMA of rate
    ``min(ema_rate, (1 + s) / (ema_warmup + s))`` at step ``s`` (``ema_warmup = None``: the
    constant ``ema_rate``; see ``trainer.state.ema_decay``)."""

    SECTION: ClassVar[str] = "optim"
    lr: float = checked(1e-3, numbers.Real, 0, low_open=True)
    warmup_steps: int = checked(100, numbers.Integral, 0)
    grad_clip: float | None = checked(1.0, numbers.Real, 0, low_open=True)
    ema_rate: float = checked(0.999, numbers.Real, 0, 1)
    # after 300 steps the plain EMA would still be 74% the initial weights
    ema_warmup: int | None = checked(10, numbers.Integral, 1)
    b1: float = checked(0.9, numbers.Real, 0, 1)
    b2: float = checked(0.999, numbers.Real, 0, 1)
    adam_eps: float = checked(1e-8, numbers.Real, 0, low_open=True)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Checked):
    """Global ``batch_size`` (over every device of every process); ``steps_per_call`` steps per
    compiled call (``lax.scan``); ``num_devices`` local devices (``None``: all); the ``*_every``
    intervals in steps (``sample_every`` writes a sample grid PNG); ``rng_block_size``: each
    block of that many consecutive examples of the global batch draws its randomness from one
    key (``trainer.step.example_losses``), so every device's share must be a multiple of it."""

    SECTION: ClassVar[str] = "training"
    batch_size: int = checked(256, numbers.Integral, 1)
    num_train_steps: int = checked(5_000, numbers.Integral, 1)
    steps_per_call: int = checked(1, numbers.Integral, 1)
    num_devices: int | None = checked(None, numbers.Integral, 1)
    log_every: int = checked(100, numbers.Integral, 1)
    eval_every: int = checked(1_000, numbers.Integral, 1)
    sample_every: int = checked(2_500, numbers.Integral, 1)
    checkpoint_every: int = checked(1_000, numbers.Integral, 1)
    keep_checkpoints: int = checked(3, numbers.Integral, 1)
    seed: int = checked(0, numbers.Integral, 0)
    rng_block_size: int = checked(8, numbers.Integral, 1)

    def __post_init__(self):
        super().__post_init__()
        if self.num_train_steps % self.steps_per_call:
            raise ValueError(f"training.num_train_steps ({self.num_train_steps}) must be a "
                             f"multiple of training.steps_per_call ({self.steps_per_call})")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Arguments of ``sde_lib.sample`` for the trainer's sample grids and ``--mode sample``
    (checked against the SDE in ``parse_config``)."""

    method: str = "euler_maruyama"
    num_steps: int = 500
    eps: float = SAMPLER_EPS  # sde_lib.sample's default
    options: Mapping = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvalConfig(_Checked):
    """Test loss on ``num_batches`` batches of ``batch_size`` of the test split;
    probability-flow bits/dim (``sde_lib.log_likelihood``, ``num_probes`` Hutchinson probes per
    example) on ``likelihood_examples`` test examples, with its standard error over them;
    ``num_samples`` samples."""

    SECTION: ClassVar[str] = "eval"
    batch_size: int = checked(256, numbers.Integral, 1)
    num_batches: int = checked(4, numbers.Integral, 1)
    likelihood: bool = True
    likelihood_examples: int = checked(64, numbers.Integral, 1)
    likelihood_eps: float = 1e-5
    divergence: str = "rademacher"
    num_probes: int = checked(1, numbers.Integral, 1)
    rtol: float = 1e-5
    atol: float = 1e-5
    num_samples: int = checked(256, numbers.Integral, 1)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed.initialize`` arguments; ``None`` fields come from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), and nothing is
    initialized when no coordinator is given."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

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
    """The fields section ``name`` of ``config`` sets; the dataclass defaults fill the rest."""
    defaults = {"model": {"name": DEFAULT_MODEL}}.get(name, {})
    return {**defaults, **(_plain(config[name]) if name in config else {})}


def default_section(section: str, /, **overrides):
    """The typed ``section`` (``"data"``, ``"optim"``, ...) of the base config, with
    ``overrides``: ``default_section("data", name="digits")``."""
    if section not in SECTION_TYPES:
        raise ValueError(f"section must be one of {sorted(SECTION_TYPES)}, got {section!r}")
    return _typed(SECTION_TYPES[section], {section: overrides}, section)


SECTION_TYPES = {"data": DataConfig, "loss": sde_lib.LossConfig, "sde": SDEConfig,
                 "optim": OptimConfig, "training": TrainingConfig, "sampling": SamplingConfig,
                 "eval": EvalConfig, "distributed": DistributedConfig}


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
    s = cfg.sampling
    if s.method not in sde_lib.SAMPLERS:
        raise ValueError(f"sampling.method must be one of {sorted(sde_lib.SAMPLERS)}, got "
                         f"{s.method!r}{closest(s.method, sde_lib.SAMPLERS)}")
    if not sde_lib.SAMPLERS[s.method].adaptive:  # checks num_steps, eps, options; traces nothing
        try:
            sde_lib.sampling.build_sampler(sde, None, s.method, s.num_steps, s.eps, **s.options)
        except ValueError as e:
            raise ValueError(f"bad sampling config: {e}") from None
    return cfg


def validate_config(config) -> ExperimentConfig:
    """``parse_config`` and ``check_devices``: every check, before anything is compiled."""
    cfg = parse_config(config)
    check_devices(cfg)
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
