"""The main job (``experiments.compare_samplers``): every sampler at every NFE on the seeds'
Gaussian pair in each of ``experiment.dims``, with a trained MLP and the exact score.

The model for dimension ``d`` is this config with ``data.dim = d``, trained in
``<workdir>/model_d<d>``: ``python -m experiments.main --config
experiments/configs/compare_samplers.py:data.dim=16 --workdir W/model_d16`` trains the same one.
"""

import ml_collections

import sde_lib
from experiments.configs import base, mixture_mlp


def get_config(arg: str | None = None):
    config = mixture_mlp.get_config()
    config.data.name = "gaussian_pair"
    config.experiment = ml_collections.ConfigDict(dict(
        dims=(2, 16),
        methods=tuple(sde_lib.SAMPLERS),  # every registered sampler, in registry order
        nfes=(10, 20, 50, 100, 250, 1000),  # Heun takes (nfe + 1) // 2 steps, pc nfe // 2
        num_samples=2000,  # samples per run, and exact samples to compare with
        num_heldout=200,  # held-out points for the probability-flow NLL
        seed=0,  # sampling and evaluation
    ))
    return base.apply_shortcuts(config, arg)
