"""One source of truth per config field: the base ConfigDict is derived from the typed sections'
defaults, parses back to them, and each check lives on its field."""

import dataclasses

import pytest

import models
import sde_lib
from experiments.configs import base as experiments_base
from trainer import base, config


@pytest.mark.parametrize("section", sorted(config.SECTION_TYPES))
def test_every_default_of_a_typed_section_is_the_config_dicts_value(section):
    cls = config.SECTION_TYPES[section]
    derived = base.get_base_config()[section].to_dict()
    assert derived == dataclasses.asdict(cls())
    assert set(derived) == {f.name for f in dataclasses.fields(cls)}


def test_the_base_config_parses_back_to_the_defaults():
    cfg = config.parse_config(base.get_base_config())
    for section, cls in config.SECTION_TYPES.items():
        assert getattr(cfg, section) == cls(), section
    assert cfg.model_name == config.DEFAULT_MODEL == base.get_base_config().model.name
    assert cfg.loss == sde_lib.LossConfig()
    # the config files' base is the same object
    assert experiments_base.get_base_config is base.get_base_config


def test_a_section_checks_its_fields_when_built():
    with pytest.raises(ValueError, match=r"optim.lr must be a number > 0, got 0"):
        config.OptimConfig(lr=0)
    with pytest.raises(ValueError, match=r"training.num_devices must be an integer >= 1 or "
                                         r"None, got 0"):
        config.TrainingConfig(num_devices=0)
    with pytest.raises(ValueError, match=r"multiple of training.steps_per_call"):
        config.TrainingConfig(num_train_steps=10, steps_per_call=3)
    assert config.TrainingConfig(num_devices=None).num_devices is None
    assert config.default_section("training", rng_block_size=2).rng_block_size == 2


def _parses(**fields) -> bool:
    try:
        config.parse_config(base.override(base.get_base_config(), fields))
    except ValueError:
        return False
    return True


def test_every_registered_name_is_reachable_from_a_config():
    """Each SDE, sampler, loss and model name is accepted as a config value (a loss that needs
    the DDPM chain, with the chain SDE)."""
    for name in sde_lib.SDES:
        assert _parses(**{"sde.name": name}), name
    for name in sde_lib.SAMPLERS:
        assert _parses(**{"sampling.method": name}), name
    for name in sde_lib.losses.LOSSES:
        assert any(_parses(**{"loss.name": name, "sde.name": sde}) for sde in sde_lib.SDES), name
    for name in models.MODELS:
        assert _parses(**{"model.name": name}), name
    assert not _parses(**{"sde.name": "vpp"})  # the check itself can fail
