"""The seeds' mixture of two Gaussians in 16 dimensions with the residual MLP."""

from experiments.configs import base


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "gaussian_pair"
    config.data.dim = 16
    config.model.hidden = 256
    config.model.num_blocks = 3
    return base.apply_shortcuts(config, arg)
