"""SDEs under test, shared by the test modules (one place to add a new SDE), keyed by their
names in ``sde_lib.SDES``."""

import math

import sde_lib

SDES = {
    "vp": lambda: sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "cosine": lambda: sde_lib.CosineVPSDE(N=1000),
    "ddpm": lambda: sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": lambda: sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "ve": lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
    "ou": lambda: sde_lib.OrnsteinUhlenbeckSDE(beta=1.5, sigma=0.8, N=1000, T=5.0),
    "bm": lambda: sde_lib.BrownianMotionSDE(sigma=1.3, N=1000, T=1.0),
}

# Monte Carlo comparisons use |estimate - exact| <= Z * standard error. With about a hundred
# comparisons per module, Z = 4.5 keeps the chance of a false alarm per module below 1e-3
# (two-sided normal tail 6.8e-6 per comparison); seeds are fixed, so results are deterministic.
Z = 4.5


def var_standard_error(var: float, n: int) -> float:
    """Standard error of the unbiased sample variance of n Gaussian draws: var sqrt(2/(n-1))."""
    return var * math.sqrt(2.0 / (n - 1))
