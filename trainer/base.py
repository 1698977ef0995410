"""The base ConfigDict, derived from the typed sections of ``trainer.config`` (where every
default lives), and the ``key=value`` shortcuts of the command line.

Sections (each a frozen dataclass of ``trainer.config``):

* ``data``: the fields of ``trainer.data.DataConfig``.
* ``model``: ``name`` (a key of ``models.MODELS``) and overrides of that model's config fields.
* ``loss``: the fields of ``sde_lib.LossConfig`` (name, weighting, parameterization, ...).
* ``sde``: ``name`` (``vp``, ``subvp``, ``cosine``, ``ve``, ``ou``, ``bm``) and ``kwargs`` of its
  constructor.
* ``optim``: Adam with a linear warmup, global-norm clipping and an EMA of the parameters.
* ``training``: global batch size, steps, steps per compiled call (``lax.scan``), logging,
  checkpointing, seed.
* ``sampling``: the ``sde_lib.sample`` method, steps, ``eps`` and method options.
* ``eval``: test loss batches, probability-flow bits/dim on a few examples, number of samples.
* ``distributed``: ``jax.distributed.initialize`` arguments.

``get_config(arg)`` accepts ``"key=value,key=value"`` for the shortcuts in ``apply_shortcuts``
(big_vision style): ``--config experiments/configs/gmm_mlp.py:sde=ve,sampler=pf_ode_heun``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from trainer.config import DEFAULT_MODEL, SECTION_TYPES

# the sections every config has (each a frozen dataclass of trainer.config)
SECTIONS = ("data", "model", "loss", "sde", "optim", "training", "sampling", "eval",
            "distributed")

# shortcut name -> dotted config field it sets
SHORTCUTS = {
    "sde": "sde.name",
    "loss": "loss.name",
    "parameterization": "loss.parameterization",
    "model": "model.name",
    "sampler": "sampling.method",
    "steps": "training.num_train_steps",
    "batch_size": "training.batch_size",
    "lr": "optim.lr",
    "seed": "training.seed",
}


def parse_value(text: str):
    """int, float (``1e3`` is the int 1000: an integral number in e-notation), bool, None or the
    text itself."""
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if cast is float and "e" in text.lower() and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def set_fields(config: ml_collections.ConfigDict, values) -> ml_collections.ConfigDict:
    """Sets dotted fields in place (``{"data.dim": 16}``) and returns ``config``.

    Raises:
      ValueError: a field the config does not have, or a name set to ``None``.
    """
    for key, value in dict(values).items():
        path = key.split(".")
        section = config
        for name in path[:-1]:
            if name not in section:
                raise ValueError(f"unknown config field {key!r}; shortcuts are "
                                 f"{sorted(SHORTCUTS)}")
            section = section[name]
        if path[-1] not in section:
            raise ValueError(f"unknown config field {key!r}; shortcuts are {sorted(SHORTCUTS)}")
        if path[-1] in ("name", "method") and value is None:
            raise ValueError(f"{key} must not be None")
        section[path[-1]] = value
    return config


def override(config: ml_collections.ConfigDict, values) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the dotted fields of ``values`` set (``config`` unchanged)."""
    return set_fields(ml_collections.ConfigDict(config.to_dict()), values)


def apply_shortcuts(config: ml_collections.ConfigDict, arg: str | None):
    """Applies ``"key=value,..."`` (keys of ``SHORTCUTS`` or dotted field paths) to ``config``."""
    if not arg:
        return config
    values = {}
    for item in arg.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"config argument items must be key=value, got {item!r}")
        values[SHORTCUTS.get(key.strip(), key.strip())] = parse_value(value.strip())
    return set_fields(config, values)


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def section_dict(cls) -> ml_collections.ConfigDict:
    """The ConfigDict of the defaults of the dataclass ``cls``: a field that may be ``None``
    (``int | None``) becomes a typed ``FieldReference``, so a command-line value parses as its
    type; a mapping an empty ConfigDict."""
    section = ml_collections.ConfigDict()
    for field, value in dataclasses.asdict(cls()).items():
        kind = next(f for f in dataclasses.fields(cls) if f.name == field).type
        if isinstance(value, Mapping):
            setattr(section, field, ml_collections.ConfigDict(value))
        elif "None" in str(kind):
            setattr(section, field, ml_collections.FieldReference(
                value, field_type=_TYPES[str(kind).split(" | ")[0]]))
        else:
            setattr(section, field, value)
    return section


def get_base_config() -> ml_collections.ConfigDict:
    """Every section's defaults (a 2-D Gaussian mixture with the residual MLP), built from the
    dataclasses of ``trainer.config``."""
    config = ml_collections.ConfigDict()
    for name in SECTIONS:
        config[name] = (ml_collections.ConfigDict({"name": DEFAULT_MODEL}) if name == "model"
                        else section_dict(SECTION_TYPES[name]))
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return apply_shortcuts(get_base_config(), arg)
