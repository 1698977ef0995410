"""``experiments.tweedie``: Tweedie moments of the MLPs trained on the asymmetric 2-D mixture
(one per training seed, in ``<workdir>/model_s<seed>``; ``trainer.main`` with this file and
``:seed=<seed>`` trains the same model)."""

import ml_collections

from experiments.configs import base, mixture_mlp


def get_config(arg: str | None = None):
    config = mixture_mlp.get_config()
    config.data.name = "asymmetric_2d"
    config.experiment = ml_collections.ConfigDict(dict(
        times=(0.02, 0.05, 0.1, 0.2, 0.4, 0.7),  # noise levels
        num_points=1000,  # x_t samples per level
        train_seeds=(0, 1, 2, 3, 4),  # one model per training seed
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
