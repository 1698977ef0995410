"""``experiments.ou_process``: Euler-Maruyama simulation of dX = -beta X dt + sigma dW."""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None):
    config = ml_collections.ConfigDict()
    config.experiment = ml_collections.ConfigDict(dict(
        beta=1.0, sigma=1.5, T=5.0,  # the process
        x0=3.0,  # the start
        num_paths=20_000, num_steps=1000,  # the simulation
        num_checkpoints=10,  # times compared, equally spaced in (0, T]
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
