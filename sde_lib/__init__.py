"""sde_lib: the mathematics of DDPM and the score SDE, as pure JAX functions.

No Flax and no I/O here; everything takes arrays and, where a model enters, a
``score_fn(x, t) -> (B, *D)``.
"""

from sde_lib.ddpm import (
    DDPMChain,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    gaussian_log_likelihood,
)
from sde_lib.gmm import (
    GaussianMixture,
    anisotropic_mixture_2d,
    asymmetric_mixture_2d,
    gaussian_pair,
    grid_of_gaussians,
    ring_of_gaussians,
)
from sde_lib.losses import LossConfig, get_loss_fn
from sde_lib.parameterization import (
    PARAMETERIZATIONS,
    Parameterization,
    convert,
    get_parameterization,
    posterior_moments,
    tweedie_covariance,
    tweedie_mean,
)
from sde_lib.sde import AbstractSDE, LinearSDE, ReverseSDE
from sde_lib.ve import VESDE, BrownianMotionSDE
from sde_lib.vp import VPSDE, CosineVPSDE, DiscreteVPSDE, OrnsteinUhlenbeckSDE, subVPSDE

__all__ = [
    "AbstractSDE", "BrownianMotionSDE", "CosineVPSDE", "DDPMChain", "DiscreteVPSDE",
    "GaussianMixture", "LinearSDE", "OrnsteinUhlenbeckSDE", "PARAMETERIZATIONS", "Parameterization",
    "ReverseSDE",
    "VESDE", "VPSDE", "anisotropic_mixture_2d", "asymmetric_mixture_2d", "convert",
    "discretized_gaussian_log_likelihood",
    "gaussian_kl", "gaussian_log_likelihood", "gaussian_pair", "get_parameterization",
    "grid_of_gaussians", "posterior_moments", "ring_of_gaussians", "subVPSDE",
    "tweedie_covariance", "tweedie_mean",
]
__all__ += ["LossConfig", "get_loss_fn", "losses"]
from sde_lib.likelihood import (  # noqa: E402
    NegativeELBO,
    bits_per_dim,
    ddpm_negative_elbo,
    log_likelihood,
    uniform_dequantize,
)

__all__ += ["NegativeELBO", "bits_per_dim", "ddpm_negative_elbo", "log_likelihood",
            "uniform_dequantize"]
from sde_lib import sampling  # noqa: E402
from sde_lib.sampling import SAMPLERS, Sweep, sample  # noqa: E402

__all__ += ["SAMPLERS", "Sweep", "sample", "sampling"]
from sde_lib import evaluation  # noqa: E402
from sde_lib.evaluation import (  # noqa: E402
    GaussianLaw,
    coupled_error,
    flow_kl,
    flow_limit_kl,
    gaussian_sampler_law,
    mmd_test,
    mode_errors,
)

__all__ += ["GaussianLaw", "coupled_error", "evaluation", "flow_kl", "flow_limit_kl",
            "gaussian_sampler_law", "mmd_test", "mode_errors"]
from sde_lib import inverse  # noqa: E402
from sde_lib.inverse import GUIDANCE, conditional_sample, guided_score_fn  # noqa: E402

__all__ += ["GUIDANCE", "conditional_sample", "guided_score_fn", "inverse"]
from sde_lib._validation import debug_checks  # noqa: E402

__all__ += ["debug_checks"]
