"""``experiments.diagnostics``: the main job's models (this is ``compare_samplers.py``'s config;
run it in the main job's workdir to reload them) and the diagnostics' own settings."""

import ml_collections

from experiments.configs import base, compare_samplers


def get_config(arg: str | None = None):
    config = compare_samplers.get_config()
    main = config.experiment
    config.experiment = ml_collections.ConfigDict(dict(
        # the full grid's dimensions (compare_samplers.FULL_GRID): in the workdir of a default
        # `make run` (d = 2 only) the d = 16 models are trained first
        dims=compare_samplers.FULL_GRID["experiment.dims"], train_seeds=main.train_seeds,
        times=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        windows=((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.0)),
        swap_nfe=100,
        snrs=(0.01, 0.04, 0.08, 0.16, 0.32),
        pc_nfes=(50, 200),
        sde_nfes=(10, 20, 50, 100, 250),
        gaussian_dim=main.gaussian_dim, gaussian_var=main.gaussian_var,
        # sampling runs per model in the score swap (training seeds x runs: the claims pair
        # them), per cell of the exact-score pc sweep, and data means of the exact SDE table
        num_samples=main.num_samples, sample_seeds=2, pc_seeds=5,
        gaussian_seeds=main.gaussian_seeds,
        seed=main.seed,
    ))
    return base.apply_shortcuts(config, arg)
