"""sde_lib: the mathematics of DDPM and the score SDE, as pure JAX functions.

No Flax and no I/O here; everything takes arrays and, where a model enters, a
``score_fn(x, t) -> (B, *D)``.
"""

from sde_lib import evaluation, inverse, losses, sampling
from sde_lib._validation import debug_checks
from sde_lib.ddpm import (
    DDPMChain,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    gaussian_log_likelihood,
)
from sde_lib.evaluation import (
    GaussianLaw,
    coupled_error,
    flow_kl,
    flow_limit_kl,
    gaussian_sampler_law,
    mmd_test,
    mode_errors,
)
from sde_lib.gmm import (
    GaussianMixture,
    anisotropic_mixture_2d,
    asymmetric_mixture_2d,
    gaussian_pair,
    grid_of_gaussians,
    ring_of_gaussians,
)
from sde_lib.inverse import GUIDANCE, conditional_sample, guided_score_fn
from sde_lib.likelihood import (
    NegativeELBO,
    bits_per_dim,
    ddpm_negative_elbo,
    log_likelihood,
    uniform_dequantize,
)
from sde_lib.losses import LossConfig, get_loss_fn
from sde_lib.mmd import MixtureMMD, mixture_mmd
from sde_lib.parameterization import (
    PARAMETERIZATIONS,
    Parameterization,
    convert,
    get_parameterization,
    posterior_moments,
    tweedie_covariance,
    tweedie_mean,
)
from sde_lib.registry import SDES, get_sde
from sde_lib.sampling import SAMPLERS, Sweep, sample
from sde_lib.sde import AbstractSDE, LinearSDE, ReverseSDE
from sde_lib.ve import VESDE, BrownianMotionSDE
from sde_lib.vp import VPSDE, CosineVPSDE, DiscreteVPSDE, OrnsteinUhlenbeckSDE, subVPSDE

__all__ = [
    # SDEs and their registry
    "AbstractSDE", "BrownianMotionSDE", "CosineVPSDE", "DiscreteVPSDE", "LinearSDE",
    "OrnsteinUhlenbeckSDE", "ReverseSDE", "SDES", "VESDE", "VPSDE", "get_sde", "subVPSDE",
    # the DDPM chain
    "DDPMChain", "discretized_gaussian_log_likelihood", "gaussian_kl", "gaussian_log_likelihood",
    # parameterizations
    "PARAMETERIZATIONS", "Parameterization", "convert", "get_parameterization",
    "posterior_moments", "tweedie_covariance", "tweedie_mean",
    # losses
    "LossConfig", "get_loss_fn", "losses",
    # samplers
    "SAMPLERS", "Sweep", "sample", "sampling",
    # likelihoods
    "NegativeELBO", "bits_per_dim", "ddpm_negative_elbo", "log_likelihood", "uniform_dequantize",
    # Gaussian-mixture oracle
    "GaussianMixture", "anisotropic_mixture_2d", "asymmetric_mixture_2d", "gaussian_pair",
    "grid_of_gaussians", "ring_of_gaussians",
    # evaluation
    "GaussianLaw", "coupled_error", "evaluation", "flow_kl", "flow_limit_kl",
    "gaussian_sampler_law", "mmd_test", "mode_errors", "MixtureMMD", "mixture_mmd",
    # inverse problems
    "GUIDANCE", "conditional_sample", "guided_score_fn", "inverse",
    # validation
    "debug_checks",
]
