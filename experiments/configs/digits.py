"""``experiments.digits``: the digits U-Net of ``digits_unet.py`` at a budget that runs on 2 CPU
cores in a few minutes (2,000 steps of batch 64 at lr 1e-3; ``digits_unet.py`` is the full run),
trained in ``<workdir>/model``; ``experiments.main`` with this file trains the same model."""

import ml_collections

from experiments.configs import base, digits_unet


def get_config(arg: str | None = None):
    config = digits_unet.get_config()
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 100
    config.training.batch_size = 64
    config.training.num_train_steps = 2_000
    steps = config.training.get_ref("num_train_steps")  # evaluate and checkpoint at the end
    config.training.eval_every = steps
    config.training.sample_every = steps
    config.training.checkpoint_every = steps
    config.eval.likelihood = False  # the module computes bits/dim itself
    config.sampling.num_steps = 100
    config.experiment = ml_collections.ConfigDict(dict(
        num_steps=100,  # sampler steps (> 20: reverse diffusion and pc need beta_i < 1)
        num_samples=16,  # images per sampler
        num_test=64,  # test images for the likelihoods and inpainting
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
