"""The base config: every section and field that ``experiments.train`` reads, with defaults.

Sections (each becomes a frozen dataclass in ``experiments.train``):

* ``data``: the fields of ``experiments.data.DataConfig``.
* ``model``: ``name`` (a key of ``models.MODELS``) and overrides of that model's config fields.
* ``loss``: the fields of ``sde_lib.LossConfig`` (name, weighting, parameterization, ...).
* ``sde``: ``name`` (``vp``, ``subvp``, ``cosine``, ``ve``, ``ou``, ``bm``) and ``kwargs`` of its
  constructor.
* ``optim``: Adam with a linear warmup, global-norm clipping and an EMA of the parameters.
* ``training``: global batch size, steps, steps per compiled call (``lax.scan``), logging,
  checkpointing, seed.
* ``sampling``: the ``sde_lib.sample`` method, steps, ``eps`` and method options.
* ``eval``: test loss batches, probability-flow bits/dim on a few examples, number of samples.
* ``distributed``: ``jax.distributed.initialize`` arguments; ``None`` reads them from the
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` environment variables,
  and nothing is initialized when no coordinator is given.

``get_config(arg)`` accepts ``"key=value,key=value"`` for the shortcuts in ``apply_shortcuts``
(big_vision style): ``--config experiments/configs/gmm_mlp.py:sde=ve,sampler=pf_ode_heun``.
"""

from __future__ import annotations

import ml_collections

# the sections every config has (each a frozen dataclass in experiments.config_types)
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


def _parse_value(text: str):
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
        values[SHORTCUTS.get(key.strip(), key.strip())] = _parse_value(value.strip())
    return set_fields(config, values)


def get_base_config() -> ml_collections.ConfigDict:
    """The defaults shared by every variant (a 2-D Gaussian mixture with the residual MLP)."""
    config = ml_collections.ConfigDict()

    config.data = data = ml_collections.ConfigDict()
    data.name = "ring"
    data.data_dir = ml_collections.FieldReference(None, field_type=str)
    data.train_split = "train"
    data.eval_split = "test"
    data.dequantize = False
    data.dim = 2
    data.num_train = 10_000
    data.num_test = 2_000
    data.seed = 0

    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"

    config.loss = loss = ml_collections.ConfigDict()
    loss.name = "dsm"
    loss.weighting = ml_collections.FieldReference(None, field_type=str)
    loss.parameterization = "eps"
    loss.eps = 1e-5
    loss.time_sampling = "uniform"
    loss.num_projections = 1
    loss.projection = "rademacher"
    loss.divergence = "exact"
    loss.variance = "beta_tilde"
    loss.reduce_mean = False

    config.sde = sde = ml_collections.ConfigDict()
    sde.name = "vp"
    sde.kwargs = ml_collections.ConfigDict()

    config.optim = optim = ml_collections.ConfigDict()
    optim.lr = 1e-3
    optim.warmup_steps = 100
    optim.grad_clip = 1.0
    optim.ema_rate = 0.999
    # EMA rate min(ema_rate, (1 + step) / (ema_warmup + step)): after 300 steps the plain EMA
    # would still be 74% the initial weights; None: the constant ema_rate
    optim.ema_warmup = ml_collections.FieldReference(10, field_type=int)
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.adam_eps = 1e-8

    config.training = training = ml_collections.ConfigDict()
    training.batch_size = 256  # global, over every device of every process
    training.num_train_steps = 5_000
    training.steps_per_call = 1  # > 1: that many steps per compiled call (lax.scan)
    training.num_devices = ml_collections.FieldReference(None, field_type=int)  # None: all local
    training.log_every = 100
    training.eval_every = 1_000
    training.sample_every = 2_500  # writes a sample grid PNG
    training.checkpoint_every = 1_000
    training.keep_checkpoints = 3
    training.seed = 0
    training.rng_block_size = 8  # examples per key of the loss noise (see experiments.train)

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "euler_maruyama"
    sampling.num_steps = 500
    sampling.eps = 1e-3
    sampling.options = ml_collections.ConfigDict()

    config.eval = ev = ml_collections.ConfigDict()
    ev.batch_size = 256
    ev.num_batches = 4  # test loss over this many batches of the test split
    ev.likelihood = True
    ev.likelihood_examples = 64  # probability-flow bits/dim on this many test examples
    ev.likelihood_eps = 1e-5
    ev.divergence = "rademacher"
    ev.rtol = 1e-5
    ev.atol = 1e-5
    ev.num_samples = 256

    config.distributed = dist = ml_collections.ConfigDict()
    dist.coordinator_address = ml_collections.FieldReference(None, field_type=str)
    dist.num_processes = ml_collections.FieldReference(None, field_type=int)
    dist.process_id = ml_collections.FieldReference(None, field_type=int)
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return apply_shortcuts(get_base_config(), arg)
