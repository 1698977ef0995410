"""Score-matching losses: per-example values ``(B,)``; time sampling and weighting are separate.

See ``get_loss_fn`` for the one entry point built from a config section.
"""

from sde_lib.losses.config import (
    DIVERGENCES,
    LOSSES,
    LossConfig,
    LossFn,
    as_loss_config,
    get_loss_fn,
)
from sde_lib.losses.denoising import (
    TARGETS,
    ddpm_loss,
    denoising_error,
    denoising_loss,
    dsm_loss,
    perturb,
    squared_error,
)
from sde_lib.losses.score_matching import (
    PROBES,
    basis_probes,
    explicit_score_matching,
    get_model_score_fn,
    noise_conditional_loss,
    quadratic_forms,
    sample_probes,
    sliced_score_matching,
)
from sde_lib.losses.time_sampling import (
    TIME_SAMPLERS,
    likelihood_time_density,
    log_snr,
    sample_index_uniform,
    sample_time_importance,
    sample_time_uniform,
)
from sde_lib.losses.weighting import (
    CONTINUOUS_TARGET_WEIGHTINGS,
    DISCRETE_TARGET_WEIGHTINGS,
    SCORE_WEIGHTINGS,
    ddpm_eps_elbo_weight,
    ddpm_unit_weight,
    ddpm_x0_elbo_weight,
    eps_elbo_weight,
    likelihood_weighting,
    sigma2_weighting,
    unit_weighting,
    x0_elbo_weight,
)

__all__ = [
    "CONTINUOUS_TARGET_WEIGHTINGS", "DISCRETE_TARGET_WEIGHTINGS", "DIVERGENCES", "LOSSES",
    "LossConfig", "LossFn", "PROBES", "SCORE_WEIGHTINGS", "TARGETS", "TIME_SAMPLERS",
    "as_loss_config",
    "basis_probes", "ddpm_eps_elbo_weight", "ddpm_loss", "ddpm_unit_weight",
    "ddpm_x0_elbo_weight", "denoising_error", "denoising_loss", "dsm_loss", "eps_elbo_weight",
    "explicit_score_matching", "get_loss_fn", "get_model_score_fn", "likelihood_time_density",
    "likelihood_weighting", "log_snr", "noise_conditional_loss", "perturb", "quadratic_forms",
    "sample_index_uniform", "sample_probes", "sample_time_importance", "sample_time_uniform",
    "sigma2_weighting", "sliced_score_matching", "squared_error", "unit_weighting",
    "x0_elbo_weight",
]
