"""``experiments.ddpm_to_sde``: the DDPM chain and its sampler converging to the VP SDE."""

import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None):
    config = ml_collections.ConfigDict()
    config.experiment = ml_collections.ConfigDict(dict(
        Ns=(50, 100, 200, 400, 800),  # chain lengths
        num_samples=100_000, dim=8,  # the sampler Monte Carlo (samples x dimensions)
        mu=0.7, s=0.5,  # the Gaussian data N(mu, s^2 I)
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
