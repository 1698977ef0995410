"""The 8x8 scikit-learn digits (prepared offline) with the tiny U-Net, DDPM's eps loss.

The SDE is the DDPM chain itself (``ddpm``: ``DiscreteVPSDE``, Ho et al.'s linear betas), so the
loss, the ancestral sampler and the ELBO all use the chain's ``alpha_bar_i`` (diffusers' and Ho et
al.'s setup, step for step); ``reduce_mean`` as Ho et al.'s code (``mean_flat``).
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "digits"
    config.model.name = "unet_digits"
    config.loss.name = "ddpm_eps"
    config.loss.reduce_mean = True
    config.sde.name = "ddpm"
    config.optim.lr = 2e-4
    config.optim.warmup_steps = 500
    config.training.batch_size = 128
    config.training.num_train_steps = 20_000
    config.sampling.method = "ddpm_ancestral"
    config.sampling.num_steps = 1000
    config.eval.batch_size = 128
    config.eval.num_batches = 2
    config.eval.likelihood_examples = 32
    config.eval.num_samples = 64
    return base.apply_shortcuts(config, arg)
