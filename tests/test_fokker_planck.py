"""The exact mixture marginal p_t solves the Fokker-Planck equation of each SDE.

dp/dt = -div(f p) + 1/2 g^2 Laplacian(p), with f(x, t), g(t) from ``sde.sde`` (the SDE's
definition) and p_t from ``marginal_coeffs`` (its closed-form solution): an independent check of
both. Autodiff in float64; the residual is compared with the size of the terms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sde_cases import SDES

import sde_lib


@pytest.mark.parametrize("name", ["vp", "cosine", "ddpm", "subvp", "ve", "ou", "bm"])
def test_fokker_planck_residual(name):
    sde = SDES[name]()
    gmm = sde_lib.asymmetric_mixture_2d()
    log_p = gmm.log_prob_fn(sde)
    p = lambda x, t: jnp.exp(log_p(x[None], t[None]))[0]

    def residual(x, t):
        dp_dt = jax.grad(p, argnums=1)(x, t)
        drift = lambda x: sde.sde(x[None], t[None])[0][0]
        g = sde.sde(x[None], t[None])[1][0]
        div_fp = jnp.trace(jax.jacfwd(lambda x: drift(x) * p(x, t))(x))
        lap = jnp.trace(jax.hessian(p)(x, t))
        rhs = -div_fp + 0.5 * g**2 * lap
        scale = jnp.abs(dp_dt) + jnp.abs(div_fp) + 0.5 * g**2 * jnp.abs(lap)
        return dp_dt - rhs, scale

    residual = jax.jit(jax.vmap(residual))
    for j, frac in enumerate((0.05, 0.3, 0.8)):
        t = frac * sde.T
        # Points where p_t has mass (drawn from p_t) and points in its tails.
        x = gmm.marginal(sde, t).sample(jax.random.PRNGKey(j), 8)
        x = jnp.concatenate([x, 1.5 * x + 0.5])
        r, scale = residual(x, jnp.full(x.shape[0], t))
        np.testing.assert_array_less(np.abs(r), 1e-9 * np.asarray(scale) + 1e-300,
                                     err_msg=f"{name} at t={t}")
        assert np.all(np.asarray(scale) > 0)
