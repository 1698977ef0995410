"""``experiments.compare_losses``: the same MLP and budget trained with each loss of ``LOSSES``.

Row ``name`` is this config with the loss fields ``LOSSES[name]``, trained once per training
seed ``s`` in ``<workdir>/model_<i>_s<s>`` (``i`` its position in ``experiment.losses``); the
table's ``config`` column is the ``--config experiments/configs/compare_losses.py:<fields>``
argument (with ``seed=s``) that makes ``python -m trainer.main`` train the same model.
"""

import ml_collections

from experiments.configs import base, mixture_mlp

LOSSES = {
    "eps prediction (eps loss)": {"name": "eps", "parameterization": "eps"},
    "x0 prediction (x0 loss)": {"name": "x0", "parameterization": "x0"},
    "v prediction (eps loss)": {"name": "eps", "parameterization": "v"},
    "score prediction (DSM sigma^2)": {"name": "dsm", "weighting": "sigma2",
                                       "parameterization": "score"},
    "DSM g^2 (likelihood)": {"name": "dsm", "weighting": "likelihood",
                             "parameterization": "score"},
    # Song et al. 2021b: the likelihood weighting with t drawn with density g^2 / sigma^2
    "DSM g^2 (likelihood), importance t": {"name": "dsm", "weighting": "likelihood",
                                           "time_sampling": "importance",
                                           "parameterization": "score"},
    "DSM unweighted": {"name": "dsm", "weighting": "none", "parameterization": "score"},
    "DDPM simple": {"name": "ddpm_eps", "weighting": "simple", "parameterization": "eps"},
    "DDPM ELBO": {"name": "ddpm_eps", "weighting": "elbo", "parameterization": "eps"},
    "sliced score matching": {"name": "ssm", "parameterization": "score"},
    "ESM Hutchinson": {"name": "esm", "divergence": "rademacher", "parameterization": "score"},
}


def get_config(arg: str | None = None):
    config = mixture_mlp.get_config()
    config.data.name = "gaussian_pair"
    config.training.num_train_steps = 3_000
    config.experiment = ml_collections.ConfigDict(dict(
        losses=tuple(LOSSES),  # keys of LOSSES
        num_heldout=2000,  # held-out points for the DSM yardstick
        num_nll=200,  # of which this many for the probability-flow NLL
        num_samples=2000,  # samples per sampler, and exact samples to compare with
        train_seeds=(0, 1, 2, 3, 4),  # one model per loss and training seed
        sample_seeds=2,  # evaluations per model (DSM, ELBO and sampler noise; exact samples)
        seed=0,  # evaluation
    ))
    return base.apply_shortcuts(config, arg)
