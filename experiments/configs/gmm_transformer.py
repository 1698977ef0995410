"""The 2-D ring of Gaussians with the Transformer denoiser (coordinates as tokens)."""

from experiments.configs import base


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "ring"
    config.model.name = "transformer"
    config.model.dim = 64
    config.model.depth = 2
    config.optim.lr = 5e-4
    return base.apply_shortcuts(config, arg)
