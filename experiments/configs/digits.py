"""``experiments.digits``: the digits U-Net of ``digits_unet.py`` (the DDPM chain, eps loss) at
a budget that trains on 2 CPU cores in about 21 minutes (8,000 steps of batch 128 at lr 1e-3;
``digits_unet.py`` is the 20,000-step run), trained in ``<workdir>/model``, evaluated every
1,000 steps for the held-out loss curve, and the Transformer on 2x2 patches
(``transformer_digits``, as many parameters) with the same loss and training in
``<workdir>/model_transformer_digits``; each of the 5 training seeds (``train_seeds``; seed
``s > 0`` in ``..._s<s>``) trains both, so the study's training alone is about 3.5 hours on 2
cores; ``trainer.main`` with this file trains the U-Net of seed 0."""

import ml_collections

import sde_lib
from experiments.configs import base, digits_unet


def get_config(arg: str | None = None):
    config = digits_unet.get_config()
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.training.batch_size = 128
    config.training.num_train_steps = 8_000
    config.training.eval_every = 1_000
    steps = config.training.get_ref("num_train_steps")  # sample and checkpoint at the end
    config.training.sample_every = steps
    config.training.checkpoint_every = 1_000
    config.eval.likelihood = False  # the module computes bits/dim itself
    config.sampling.num_steps = 100
    config.experiment = ml_collections.ConfigDict(dict(
        methods=tuple(sde_lib.SAMPLERS),  # every sampler in the quality table
        nfes=(20, 50, 100),  # their NFE targets
        num_samples=297,  # samples per sampler and NFE (as many as test digits)
        num_test=297,  # test digits for the bits/dim (all)
        num_inverse=200,  # test digits for the inverse problems (the first ones)
        num_validation=64,  # the last test digits, on which DPS's zeta' is chosen
        likelihood_tol=1e-4,  # rtol and atol of the adaptive PF-ODE likelihood
        inverse_steps=100,  # DDPM ancestral steps of the conditional samplers
        tasks=("inpainting", "super-resolution", "denoising"),  # the inverse problems
        zetas=(0.2, 1.0, 3.0, 10.0),  # DPS's normalised step sizes (Chung et al.: zeta' x steps)
        networks=("unet_digits", "transformer_digits"),  # the U-Net and the patch Transformer
        train_seeds=(0, 1, 2, 3, 4),  # each network trained once per seed, measured per model
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
