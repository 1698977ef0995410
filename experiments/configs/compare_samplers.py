"""The main job (``experiments.compare_samplers``): every sampler at every NFE on the seeds'
Gaussian pair in each of ``experiment.dims``, with a trained MLP and the exact score.

The model for dimension ``d`` and training seed ``s`` is this config with ``data.dim = d`` and
``training.seed = s``, trained in ``<workdir>/model_d<d>_s<s>``: ``python -m trainer.main
--config experiments/configs/compare_samplers.py:data.dim=16,seed=1 --workdir W/model_d16_s1``
trains the same one.
"""

import ml_collections

import sde_lib
from experiments.configs import base, mixture_mlp


def get_config(arg: str | None = None):
    config = mixture_mlp.get_config()
    config.data.name = "gaussian_pair"
    config.experiment = ml_collections.ConfigDict(dict(
        # The default (d = 2, NFE 10-50, one sampling seed) fits about 10 minutes on 2 cores;
        # results/compare_samplers is the full grid, FULL_GRID below, which adds d = 16
        dims=(2,),
        methods=tuple(sde_lib.SAMPLERS),  # every registered sampler
        nfes=(10, 20, 50),  # Heun takes (nfe + 1) // 2 steps, pc nfe // 2
        num_samples=2000,  # samples per run, and exact samples to compare with
        num_heldout=200,  # held-out points for the probability-flow NLL
        train_seeds=(0, 1, 2, 3, 4),  # one model per training seed (and dimension)
        sample_seeds=1,  # sampling seeds per model, each with its own exact reference set
        mmd_bandwidths=(0.5, 1.0, 2.0),  # the MMD's kernels, in units of sqrt(d)
        gaussian_dim=16,  # the exact (Monte-Carlo-free) table: N(mu, diag(s^2)) in this
        gaussian_var=(0.01, 1.0),  # dimension, s^2 log-spaced over this range
        gaussian_seeds=5,  # its data means mu ~ N(0, I), seeds seed, seed + 1, ...
        flow_kl_dims=(2, 16),  # deterministic samplers' KL by change of variables in these dims
        flow_kl_points=500,  # prior draws per run for it (first sampling seed of each group)
        reference_steps=1000,  # Euler-Maruyama at this many steps: the quality target (0: none)
        seed=0,  # sampling and evaluation
    ))
    return base.apply_shortcuts(config, arg)


# what results/compare_samplers ran: --config.experiment.dims="(2, 16)"
# --config.experiment.nfes="(10, 20, 50, 100)" --config.experiment.sample_seeds=2
# --config.experiment.flow_kl_points=1000
# --config.experiment.train_seeds="(0, 1, 2, 3, 4, 10, 11, 12, 13, 14)"
# (10 training seeds: the models' spread has a heavy tail that 5 do not estimate; seeds 5-9 are
# left for the re-run check)
FULL_GRID = {"experiment.dims": (2, 16), "experiment.nfes": (10, 20, 50, 100),
             "experiment.sample_seeds": 2, "experiment.flow_kl_points": 1000,
             "experiment.train_seeds": (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)}
