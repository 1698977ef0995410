"""``experiments.testbeds``: the seeds' Transformer denoiser on the Gaussian pair in d = 64 (one
model per training seed, ``training.seed = s``, in ``<workdir>/model_s<s>``), and the testbeds'
settings.

``python -m trainer.main --config experiments/configs/testbeds.py:seed=1 --workdir
W/model_s1`` trains the same model as the module does for training seed 1.
"""

import ml_collections

from experiments.configs import base, mixture_mlp


def get_config(arg: str | None = None):
    config = mixture_mlp.get_config()
    config.data.name = "gaussian_pair"
    config.data.dim = 64
    config.model = ml_collections.ConfigDict(dict(name="transformer", dim=64, depth=2))
    config.optim.lr = 5e-4
    config.training.batch_size = 256
    config.training.num_train_steps = 2_000
    config.training.steps_per_call = 50
    config.experiment = ml_collections.ConfigDict(dict(
        testbeds=("pair", "anisotropic", "small_ring", "pair64"),
        methods=("euler_maruyama", "reverse_diffusion", "ddpm_ancestral", "ddim",
                 "pf_ode_euler", "pf_ode_heun"),
        nfes=(10, 20, 50, 100),
        model_nfes=(10, 50),  # the Transformer's runs (its score calls are the costly ones)
        model_methods=("euler_maruyama", "ddpm_ancestral", "ddim", "pf_ode_heun"),
        num_samples=2000,  # per run, and exact samples to compare with
        sample_seeds=5,  # of the exact score
        model_sample_seeds=1,  # per Transformer: the cells' spread is the training seeds'
        train_seeds=(0, 1, 2, 3, 4),
        ref_steps=1000,  # the pathwise error's reference run (the DDPM chain's N)
        flow_kl_points=1000,
        mmd_points=500,
        seed=0,
    ))
    return base.apply_shortcuts(config, arg)
