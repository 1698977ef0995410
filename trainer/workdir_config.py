"""The config a training workdir was trained with, as a config file:
``--config trainer/workdir_config.py:W`` loads ``W/config.json`` (``trainer.saved_config``) into
a ConfigDict, so that ``--config.<field>=value`` overrides it as it would a file of
``experiments/configs``. ``trainer.main`` uses it when ``--config`` is left out and the workdir
has a ``config.json``: ``--mode eval``, ``--mode sample`` and a resumed training need only
``--workdir``.
"""

import ml_collections


def _tuples(value):
    """JSON's lists back to the tuples the configs hold."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def get_config(workdir: str) -> ml_collections.ConfigDict:
    from trainer.evaluation import saved_config
    return ml_collections.ConfigDict(_tuples(saved_config(workdir)))
