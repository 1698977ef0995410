"""``experiments.inverse_problems``: conditional sampling on the asymmetric 2-D mixture with the
exact score and the MLP of ``tweedie.py`` (trained in ``<workdir>/model``)."""

import ml_collections

from experiments.configs import base, tweedie


def get_config(arg: str | None = None):
    config = tweedie.get_config()
    config.experiment = ml_collections.ConfigDict(dict(
        ys=(-1.5, 0.5, 1.5),  # observed values of x_1
        num_samples=2000,
        num_steps=500,
        method="euler_maruyama",  # the conditional sampler's fixed-step method
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
