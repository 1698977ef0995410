"""The main job (``experiments.compare_samplers``) with every registered sampler, the fast ones
(DPM-Solver++, UniPC, EDM) included, at NFE 10-100, and Euler-Maruyama at 1000 steps as the
quality target (the NFE at which each sampler reaches it is in ``summary.md``). The models are
the main job's (``compare_samplers.py``'s model config): run it in the main job's workdir to
reuse them. ``python -m experiments.compare_samplers --config
experiments/configs/fast_samplers.py --workdir runs/compare_samplers``: 15.5 min on 2 cores
(with training the 6 models).
"""

import sde_lib
from experiments.configs import base, compare_samplers


def get_config(arg: str | None = None):
    config = compare_samplers.get_config()
    config.experiment.methods = tuple(sde_lib.SAMPLERS)  # every registered sampler
    config.experiment.nfes = (10, 20, 50, 100)
    config.experiment.reference_steps = 1000
    return base.apply_shortcuts(config, arg)
