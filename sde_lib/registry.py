"""The SDE registry: one name per SDE, used by configs, studies and docs alike.

``get_sde(name, **kwargs)`` turns a config's ``sde.name`` and keyword arguments into the SDE
object; everything below takes the object.
"""

from __future__ import annotations

from sde_lib._validation import closest
from sde_lib.ve import VESDE, BrownianMotionSDE
from sde_lib.vp import VPSDE, CosineVPSDE, DiscreteVPSDE, OrnsteinUhlenbeckSDE, subVPSDE

SDES = {
    "vp": VPSDE,  # linear beta(t) (Song et al. 2021, Eq. 11)
    "ddpm": DiscreteVPSDE,  # the DDPM chain as an SDE (beta_min, beta_max, N or betas)
    "subvp": subVPSDE,  # Song et al. 2021, Eq. 12
    "cosine": CosineVPSDE,  # the cosine schedule (Nichol & Dhariwal 2021, Eq. 17)
    "ve": VESDE,  # Song et al. 2021, Eq. 9
    "ou": OrnsteinUhlenbeckSDE,  # dX = -beta X dt + sigma dW
    "bm": BrownianMotionSDE,  # dX = sigma dW
}


def get_sde(name: str, **kwargs):
    """The SDE ``SDES[name](**kwargs)``.

    Raises:
      ValueError: for a name not in ``SDES`` (the valid names are listed) or keyword arguments
        its constructor does not take (named); a constructor's own ValueError for bad values.
    """
    if not isinstance(name, str) or name not in SDES:
        raise ValueError(f"sde name must be one of {sorted(SDES)}, got {name!r}"
                         f"{closest(name, SDES)}")
    try:
        return SDES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad keyword arguments {kwargs} for SDE {name!r}: {e}") from None
