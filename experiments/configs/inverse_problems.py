"""``experiments.inverse_problems``: conditional sampling on the asymmetric 2-D mixture with the
exact score and the MLPs of ``tweedie.py`` (one per training seed, trained in
``<workdir>/model_s<seed>``)."""

import ml_collections

from experiments.configs import base, tweedie


def get_config(arg: str | None = None):
    config = tweedie.get_config()
    config.experiment = ml_collections.ConfigDict(dict(
        ys=(-1.5, 0.5, 1.5),  # observed values of x_1
        num_samples=2000,
        num_steps=500,
        method="euler_maruyama",  # the conditional sampler's fixed-step method
        train_seeds=(0, 1, 2, 3, 4),  # the models (tweedie.py's, one per training seed)
        sample_seeds=2,  # sampling seeds per score
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
