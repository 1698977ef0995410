r"""``ddim``: DDIM (Song, Meng & Ermon 2021, Eq. 12), the generalized DDIM step of
``ancestral.py`` with the marginal variance kept; ``eta = 1`` is ancestral sampling with
``beta_tilde``, ``eta = 0`` a deterministic map (DPM-Solver-1).

Options (defaults first): ``eta=0.0``, and ``chain``, ``time_grid="uniform"``,
``clip_denoised=False`` as ``ddpm_ancestral``'s (``ancestral.py``).
"""

from __future__ import annotations

import functools

from sde_lib._validation import check_nonneg
from sde_lib.sampling.ancestral import (
    CHAIN_GRID_OPTIONS,
    chain_or_continuous_coefficients,
    generalized_ddim,
)
from sde_lib.sampling.registry import Sampler, register


def _ddim_step(sde, score_fn, o):
    eta2 = o["eta"] ** 2
    return functools.partial(generalized_ddim, score_fn=score_fn, eps_scale="marginal",
                             noise_scale=(lambda v, b2: eta2 * v) if eta2 else None,
                             clip=o["clip_denoised"])


register(Sampler("ddim", {"eta": (0.0, check_nonneg), **CHAIN_GRID_OPTIONS},
                 chain_or_continuous_coefficients, _ddim_step,
                 deterministic=lambda o: o["eta"] == 0))
