"""Porting without surprises (issue 27): ``edm_stochastic`` without churn is ``edm_heun`` under
``jit`` in float32, and with churn equals a float64 run of the same noise to float32 round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import sde_lib
from sde_lib.sampling import build_sampler, scan_steps

B, D = 16, 3


def _score_fn(sde):
    """A nonlinear score near that of Gaussian data ``N(0.7, 0.5^2)``: finite samples of scale
    ~1 at t = 0 on VP and VE, in the dtype of ``x``."""
    def score(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        alpha, sigma = alpha.astype(x.dtype)[:, None], sigma.astype(x.dtype)[:, None]
        mean = alpha * (0.7 + 0.2 * jnp.tanh(x))
        return -(x - mean) / (alpha**2 * 0.25 + sigma**2)
    return score


def _x_T(sde, dtype):
    return sde.prior_sampling(jax.random.key(7), (B, D)).astype(dtype)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()], ids=["vp", "ve"])
def test_edm_stochastic_without_churn_is_edm_heun_float32_jit(sde):
    """float32 under ``jit``: ``edm_stochastic(s_churn=0)`` is ``edm_heun`` (bit for bit here;
    asserted to 1e-6 of the samples' scale, one float32 ulp being 1.2e-7). The step adds no
    noise where ``gamma = 0``; issue 27 measured 4e-3 (VP) and 6.5e-3 (VE) when an XLA build
    fused ``s_hat**2 - s**2`` into a multiply-add and the square root of its rounding error
    scaled the noise."""
    x_T = _x_T(sde, jnp.float32)
    out = {}
    for method, opts in (("edm_heun", {}), ("edm_stochastic", {"s_churn": 0.0})):
        step, coeffs, _ = build_sampler(sde, _score_fn(sde), method, 20, **opts)
        out[method] = np.asarray(jax.jit(lambda x, step=step, coeffs=coeffs: scan_steps(
            step, jax.random.key(3), x, coeffs))(x_T))
    assert out["edm_heun"].dtype == np.float32
    scale = np.abs(out["edm_heun"]).max()
    np.testing.assert_allclose(out["edm_stochastic"], out["edm_heun"], rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()], ids=["vp", "ve"])
def test_edm_stochastic_with_churn_float32_matches_float64(sde):
    """With churn (``s_churn=20``) and one fixed noise draw per step, the float32 run under
    ``jit`` equals the float64 one to float32 round-off (relative 1e-5 of the samples' scale)."""
    K = 20
    step, coeffs, _ = build_sampler(sde, _score_fn(sde), "edm_stochastic", K, s_churn=20.0)
    draws = np.random.default_rng(0).normal(size=(K, B, D))

    @jax.jit
    def run(x, z):
        c = jax.tree.map(lambda a: jnp.asarray(a).astype(x.dtype), coeffs)
        return lax.scan(lambda x, inp: (step(inp[0], x, inp[1])[0], None), x, (z, c))[0]

    x64 = np.asarray(run(_x_T(sde, jnp.float64), jnp.asarray(draws)))
    x32 = np.asarray(run(_x_T(sde, jnp.float32), jnp.asarray(draws, jnp.float32)))
    assert x32.dtype == np.float32
    scale = np.abs(x64).max()
    assert 0.3 < scale < 10.0
    np.testing.assert_allclose(x32, x64, rtol=0, atol=1e-5 * scale)
