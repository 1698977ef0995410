"""Continuous SDEs: closed forms against simulation, quadrature, moment ODEs and scipy."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from _compiles import count_compilations
from _sde_cases import SDES, Z, var_standard_error

import sde_lib


def simulate_forward(sde, x0, rng, t_end, num_steps, n_paths, record):
    """Euler-Maruyama simulation of the forward SDE from a fixed x0 (d,) over [0, t_end].

    Returns the states after the step counts in ``record``, shape (len(record), n_paths, d).
    """
    dt = t_end / num_steps
    x = jnp.broadcast_to(x0, (n_paths,) + x0.shape)

    def step(x, inp):
        k, key = inp
        t = jnp.full((n_paths,), k * dt)
        drift, g = sde.sde(x, t)
        z = jax.random.normal(key, x.shape)
        return x + drift * dt + g[:, None] * math.sqrt(dt) * z, None

    keys = jax.random.split(rng, num_steps)
    out, start = [], 0
    for stop in record:
        x, _ = jax.lax.scan(step, x, (jnp.arange(start, stop), keys[start:stop]))
        out.append(x)
        start = stop
    return jnp.stack(out)


def euler_maruyama_moments(sde, x0, t_end, num_steps):
    """The exact mean and variance of the Euler-Maruyama scheme x_{k+1} = x_k + f_k x_k h +
    g_k sqrt(h) z_k from x0 at t_end (the scheme is linear: m_{k+1} = (1 + f_k h) m_k,
    v_{k+1} = (1 + f_k h)^2 v_k + g_k^2 h), in float64, with f and g from sde.sde."""
    h = t_end / num_steps
    with jax.enable_x64(True):
        t = jnp.arange(num_steps, dtype=jnp.float64) * h
        drift, g = sde.sde(jnp.ones((num_steps, 1), jnp.float64), t)
    a, g2h = 1.0 + np.asarray(drift[:, 0]) * h, np.asarray(g) ** 2 * h
    # v_K = sum_k g_k^2 h prod_{j > k} a_j^2; the products as suffix products
    tail = np.concatenate([np.cumprod(a[::-1] ** 2)[::-1][1:], [1.0]])
    return np.prod(a) * np.asarray(x0), float(np.sum(g2h * tail))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SDES))
def test_marginal_prob_matches_euler_maruyama(name):
    """marginal_prob(x0, t) against Euler-Maruyama on dx = f dt + g dW, in two parts that each
    have one source of error: (1) the scheme's exact moments (``euler_maruyama_moments``) at
    200,000 steps equal the closed form to 1e-4 of the variance (the weak error is O(h), and
    halving h halves it: checked at 100,000); (2) a simulation of 20,000 paths at 200 steps has
    the scheme's moments at 200 steps within Z Monte Carlo standard errors (the simulation draws
    what the recursion says, with sde.sde's f and g)."""
    sde = SDES[name]()
    x0 = np.array([1.5, -0.5, 2.0])
    # End times inside [0, T]; the cosine schedule's rate grows without bound near T (until
    # its clip), so it is checked where the steps are still fine.
    t_end = (0.9 if name == "cosine" else 1.0) * sde.T
    for t in (0.1 * t_end, 0.5 * t_end, t_end):
        mean, std = sde.marginal_prob(jnp.asarray(x0)[None], jnp.array([t]))
        var = float(std[0]) ** 2
        (m1, v1), (m2, v2) = (euler_maruyama_moments(sde, x0, t, k) for k in (100_000, 200_000))
        assert abs(v1 - var) / abs(v2 - var) > 1.6 or abs(v2 - var) < 1e-6 * var, (v1, v2, var)
        np.testing.assert_allclose(m2, mean[0], rtol=1e-4, atol=1e-6, err_msg=f"{name} t={t}")
        np.testing.assert_allclose(v2, var, rtol=1e-4, err_msg=f"{name} variance at t={t}")
    n, steps = 20000, 200
    record = (20, 100, 200)
    xs = simulate_forward(sde, jnp.asarray(x0), jax.random.PRNGKey(0), t_end, steps, n, record)
    for x, k in zip(np.asarray(xs), record, strict=True):
        mean, var = euler_maruyama_moments(sde, x0, k / steps * t_end, k)
        np.testing.assert_array_less(np.abs(x.mean(0) - mean), Z * math.sqrt(var / n),
                                     err_msg=f"{name} simulated mean after {k} steps")
        np.testing.assert_array_less(np.abs(x.var(0, ddof=1) - var),
                                     Z * var_standard_error(var, n),
                                     err_msg=f"{name} simulated variance after {k} steps")


@pytest.mark.parametrize("name", sorted(SDES))
def test_marginal_coeffs_solve_moment_odes(name):
    """alpha_t and sigma_t^2 solve d alpha/dt = f(t) alpha, d sigma^2/dt = 2 f(t) sigma^2 + g^2,
    with f, g taken from sde.sde (the SDE's definition, not its closed form)."""
    sde = SDES[name]()
    t = jnp.linspace(0.02, 0.98, 13) * sde.T
    if name == "cosine":  # away from the clip's kink in beta
        t = t[jnp.abs(t - sde.t_clip) > 1e-3]

    def coeffs(t):
        a, s = sde.marginal_coeffs(t[None])
        return a[0], s[0] ** 2

    for ti in t:
        (a, v), (da, dv) = jax.jvp(coeffs, (ti,), (jnp.ones_like(ti),))
        drift, g = sde.sde(jnp.ones((1, 1)), ti[None])
        f = drift[0, 0]
        np.testing.assert_allclose(da, f * a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dv, 2 * f * v + g[0] ** 2, rtol=1e-10, atol=1e-12)
    a0, s0 = sde.marginal_coeffs(jnp.zeros(1))
    chex.assert_trees_all_close((a0, s0), (jnp.ones(1), jnp.zeros(1)), atol=1e-12)


def test_vp_closed_form_against_quadrature():
    """VP: log alpha_t = -1/4 t^2 (b1 - b0) - 1/2 t b0 and std from quadrature of beta."""
    b0, b1 = 0.1, 20.0
    vp = sde_lib.VPSDE(b0, b1)
    beta = lambda s: b0 + s * (b1 - b0)
    for t in (0.0, 0.01, 0.3, 0.77, 1.0):
        B, _ = scipy.integrate.quad(beta, 0.0, t, epsabs=1e-13, epsrel=1e-13)
        a, s = vp.marginal_coeffs(jnp.array([t]))
        np.testing.assert_allclose(np.log(a[0]), -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0,
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a[0], np.exp(-0.5 * B), rtol=1e-12)
        np.testing.assert_allclose(s[0], np.sqrt(1 - np.exp(-B)), rtol=1e-12, atol=1e-15)
        # sub-VP: std 1 - e^{-B} (no square root), same mean.
        a2, s2 = sde_lib.subVPSDE(b0, b1).marginal_coeffs(jnp.array([t]))
        np.testing.assert_allclose((a2[0], s2[0]), (np.exp(-0.5 * B), 1 - np.exp(-B)),
                                   rtol=1e-12, atol=1e-15)


def test_cosine_vp_against_nichol_dhariwal():
    """Cosine VP: alpha_bar(t) = cos^2 phi(t) / cos^2 phi(0) below the clip (Nichol & Dhariwal
    Eq. 17), and integrated_beta equals the quadrature of the clipped beta everywhere."""
    s, beta_max = 0.008, 999.0
    sde = sde_lib.CosineVPSDE(s=s, beta_max=beta_max)
    f = lambda t: np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    rate = lambda t: min(np.pi / (1 + s) * np.tan((t + s) / (1 + s) * np.pi / 2), beta_max)
    for t in (0.1, 0.5, 0.9, 0.99, sde.t_clip, 0.999, 1.0):
        B, _ = scipy.integrate.quad(rate, 0.0, t, epsabs=1e-12, epsrel=1e-12, limit=200)
        np.testing.assert_allclose(sde.integrated_beta(jnp.array(t)), B, rtol=1e-9)
        if t <= sde.t_clip:
            a, _ = sde.marginal_coeffs(jnp.array([t]))
            np.testing.assert_allclose(a[0] ** 2, f(t) / f(0), rtol=1e-10)
    # Discrete betas: Nichol & Dhariwal's 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}), clipped.
    t = np.arange(1001) / 1000
    expected = np.minimum(1 - f(t[1:]) / f(t[:-1]), 0.999)
    # 1 - ratio cancels: its absolute round-off is a few machine epsilons.
    np.testing.assert_allclose(sde.discrete_betas, expected, rtol=1e-12, atol=4e-16)


def test_ve_closed_form():
    """VE: variance sigma(t)^2 - sigma_min^2; the SMLD steps' variances add up to it."""
    smin, smax = 0.01, 50.0
    ve = sde_lib.VESDE(smin, smax, N=100)
    t = np.array([0.0, 0.2, 0.5, 1.0])
    sigma = smin * (smax / smin) ** t
    _, std = ve.marginal_coeffs(jnp.asarray(t))
    np.testing.assert_allclose(std**2, sigma**2 - smin**2, rtol=1e-12, atol=1e-18)
    grid = (np.arange(ve.N) + 1) / ve.N
    _, G = ve.discretize(jnp.zeros((ve.N, 1)), jnp.asarray(grid))
    np.testing.assert_allclose(np.cumsum(np.asarray(G) ** 2), smin**2 * (smax / smin) ** (2 * grid)
                               - smin**2, rtol=1e-10)


def test_ou_closed_forms_and_stationary_law():
    """OU: mean e^{-beta t} x0, variance sigma^2/(2 beta)(1 - e^{-2 beta t}), prior N(0,
    sigma^2/(2 beta)); simulating from the prior keeps the law stationary."""
    beta, sigma = 1.5, 0.8
    ou = sde_lib.OrnsteinUhlenbeckSDE(beta=beta, sigma=sigma, T=5.0)
    t = np.array([0.0, 0.3, 1.0, 5.0, 60.0])
    a, s = ou.marginal_coeffs(jnp.asarray(t))
    np.testing.assert_allclose(a, np.exp(-beta * t), rtol=1e-12)
    np.testing.assert_allclose(s**2, sigma**2 / (2 * beta) * (1 - np.exp(-2 * beta * t)),
                               rtol=1e-12, atol=1e-300)
    stationary = sigma**2 / (2 * beta)
    np.testing.assert_allclose(s[-1] ** 2, stationary, rtol=1e-14)
    assert ou.prior_std**2 == pytest.approx(stationary, rel=1e-14)

    n, d = 20000, 2
    rng0, rng1 = jax.random.split(jax.random.PRNGKey(7))
    x = ou.prior_sampling(rng0, (n, d))
    # to t = 0.6 (a drift or diffusion off by a factor would move the variance by 1 - e^{-1.8}
    # = 83% of its effect at equilibrium); Euler's bias in the variance beta dt / 2 = 0.075%
    # << SE 1%
    dt, steps = 1e-3, 600
    def step(x, key):
        drift, g = ou.sde(x, jnp.zeros(n))
        return x + drift * dt + g[:, None] * math.sqrt(dt) * jax.random.normal(key, x.shape), None
    x, _ = jax.lax.scan(step, x, jax.random.split(rng1, steps))
    np.testing.assert_array_less(np.abs(np.mean(x, 0)), Z * math.sqrt(stationary / n))
    np.testing.assert_array_less(np.abs(np.var(x, 0, ddof=1) - stationary),
                                 Z * var_standard_error(stationary, n))


@pytest.mark.parametrize("name", sorted(SDES))
def test_prior_logp_and_sampling(name):
    """prior_logp against scipy; prior_sampling has the prior's moments; (B, *D) shapes."""
    sde = SDES[name]()
    z = sde.prior_sampling(jax.random.PRNGKey(0), (4000, 3, 2, 2))
    chex.assert_shape(z, (4000, 3, 2, 2))
    expected = scipy.stats.norm.logpdf(np.asarray(z), scale=sde.prior_std).sum((1, 2, 3))
    np.testing.assert_allclose(sde.prior_logp(z), expected, rtol=1e-12)
    flat = np.asarray(z).reshape(-1)
    n, var = flat.size, sde.prior_std**2
    assert abs(flat.mean()) < Z * math.sqrt(var / n)
    assert abs(flat.var(ddof=1) - var) < Z * var_standard_error(var, n)


def test_vp_discretize_is_a_ddpm_step():
    """VP discretize at t_i = (i + 1) / N: f = sqrt(1 - beta_i) x - x, G = sqrt(beta_i), with
    beta_i = linspace(beta_min / N, beta_max / N, N)[i] computed here independently."""
    vp = sde_lib.VPSDE(0.1, 20.0, N=50)
    betas = np.linspace(0.1 / 50, 20.0 / 50, 50)
    i = np.array([0, 1, 17, 49])
    t = (i + 1) / 50
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 2))
    f, G = vp.discretize(x, jnp.asarray(t))
    np.testing.assert_allclose(x + f, np.sqrt(1 - betas[i])[:, None, None] * x, rtol=1e-12)
    np.testing.assert_allclose(G, np.sqrt(betas[i]), rtol=1e-12)
    np.testing.assert_allclose(vp.discrete_betas, betas, rtol=1e-12)
    # Rounding: times within half a step map to the same index; the ends clip.
    np.testing.assert_array_equal(vp.time_to_index(jnp.asarray(t + 0.4 / 50)), i)
    np.testing.assert_array_equal(vp.time_to_index(jnp.array([0.0, 1.0])), [0, 49])


@pytest.mark.parametrize("name", ["subvp", "ou", "bm"])
def test_default_discretize_is_euler_maruyama(name):
    sde = SDES[name]()
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 4))
    t = jnp.array([0.1, 0.4, 0.8]) * sde.T
    drift, g = sde.sde(x, t)
    f, G = sde.discretize(x, t)
    dt = sde.T / sde.N
    chex.assert_trees_all_close((f, G), (drift * dt, g * math.sqrt(dt)), rtol=1e-12)


def test_reverse_drift_and_probability_flow():
    """Reverse SDE drift f - g^2 s with diffusion g; probability flow f - g^2 s / 2, no noise;
    the reverse discretization x - f + G^2 s (Song et al. 2021, Eq. 46)."""
    vp = sde_lib.VPSDE()
    score_fn = lambda x, t: -x * (1.0 + t)[:, None] + 0.3
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    t = jnp.linspace(0.1, 0.9, 5)
    beta = 0.1 + t * 19.9
    s = score_fn(x, t)
    f = -0.5 * beta[:, None] * x
    drift, g = vp.reverse(score_fn).sde(x, t)
    chex.assert_trees_all_close((drift, g), (f - beta[:, None] * s, jnp.sqrt(beta)), rtol=1e-12)
    drift, g = vp.reverse(score_fn, probability_flow=True).sde(x, t)
    chex.assert_trees_all_close((drift, g), (f - 0.5 * beta[:, None] * s, jnp.zeros(5)),
                                rtol=1e-12)
    fd, Gd = vp.discretize(x, t)
    rf, rG = vp.reverse(score_fn).discretize(x, t)
    chex.assert_trees_all_close((rf, rG), (fd - (Gd**2)[:, None] * s, Gd), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name,probability_flow",
                         [("vp", False), ("vp", True), ("subvp", False), ("ve", False)])
def test_reverse_sde_with_exact_score_reproduces_mixture(name, probability_flow):
    """Euler-Maruyama on Anderson's reverse SDE (or Euler on the probability-flow ODE), driven
    by the exact mixture score from the prior, reproduces the mixture's mean and covariance.

    Tolerance: Z standard errors of the sample mean (sqrt(C_jj / n)) and of the sample covariance
    entries (their standard deviation estimated from the samples). 2000 steps keep the
    discretization bias well below the 2% standard error of n = 10000 samples; the time cutoff
    eps = 1e-3 adds sigma_eps^2 <= 2e-4 to the covariance.
    """
    sde = SDES[name]()
    gmm = sde_lib.asymmetric_mixture_2d()
    rsde = sde.reverse(gmm.score_fn(sde), probability_flow=probability_flow)
    n, steps, eps = 10000, 2000, 1e-3
    rng0, rng1 = jax.random.split(jax.random.PRNGKey(11))
    x = sde.prior_sampling(rng0, (n, 2))
    ts = jnp.linspace(sde.T, eps, steps + 1)

    def step(x, inp):
        t, t_next, key = inp
        dt = t - t_next
        drift, g = rsde.sde(x, jnp.full((n,), t))
        z = jax.random.normal(key, x.shape)
        return x - drift * dt + g[:, None] * jnp.sqrt(dt) * z, None

    x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:], jax.random.split(rng1, steps)))
    x, m, C = np.asarray(x), np.asarray(gmm.mean()), np.asarray(gmm.covariance())
    np.testing.assert_array_less(np.abs(x.mean(0) - m), Z * np.sqrt(np.diag(C) / n))
    xc = x - x.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]
    se = prods.std(0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(prods.mean(0) - C), Z * se)


@pytest.mark.parametrize("name", sorted(SDES))
def test_sdes_are_values(name):
    """SDEs are immutable, equal and hashable by class and parameters, and static pytrees: an
    SDE is a ``jax.jit`` argument, and two equal SDEs share one compilation."""
    sde, same = SDES[name](), SDES[name]()
    assert sde == same and hash(sde) == hash(same) and sde is not same
    assert sde != sde.with_num_steps(sde.N + 1) and sde.with_num_steps(sde.N) == sde
    assert sde != sde_lib.BrownianMotionSDE(sigma=0.123)
    with pytest.raises(AttributeError, match="is immutable"):
        sde.T2 = 1.0
    with pytest.raises(AttributeError, match="is immutable"):
        sde._N = 5
    assert jax.tree.leaves(sde) == []
    f = jax.jit(lambda s, x: s.marginal_prob(x, jnp.full((2,), 0.3 * s.T))[0])
    x = jnp.ones((2, 3))
    want = sde.marginal_prob(x, jnp.full((2,), 0.3 * sde.T))[0]
    with count_compilations() as first:
        chex.assert_trees_all_close(f(sde, x), want)
    with count_compilations() as second:
        chex.assert_trees_all_close(f(same, x), want)
    assert len(first) >= 1 and len(second) == 0


@pytest.mark.parametrize("name", sorted(SDES))
def test_repr_rebuilds_the_sde(name):
    """``repr`` names the class and every constructor parameter, and evaluated with the
    ``sde_lib`` names in scope it gives an equal SDE with the same marginals (also for a copy
    with another number of steps)."""
    scope = vars(sde_lib)
    t = jnp.array([0.01, 0.3, 0.9])
    x0 = jnp.ones((3, 2))
    sde = SDES[name]()
    for s in (sde, sde.with_num_steps(37)):
        text = repr(s)
        assert text.startswith(type(s).__name__ + "(") and " object at 0x" not in text, text
        rebuilt = eval(text, scope)  # noqa: S307 -- our own repr, sde_lib names only
        assert rebuilt == s and repr(rebuilt) == text
        chex.assert_trees_all_close(rebuilt.marginal_prob(x0, t * s.T),
                                    s.marginal_prob(x0, t * s.T))
        assert f"N={s.N}" in text or f"with_num_steps({s.N})" in text
    assert str(sde_lib.VPSDE(beta_min=0.5, beta_max=7.0, N=10)) == (
        "VPSDE(beta_min=0.5, beta_max=7.0, N=10, T=1.0)")
    assert str(sde_lib.OrnsteinUhlenbeckSDE(beta=1.5, sigma=0.8, N=9, T=2.0)) == (
        "OrnsteinUhlenbeckSDE(beta=1.5, sigma=0.8, N=9, T=2.0)")


def test_repr_of_a_chain_that_is_not_linear_summarises_its_betas():
    """A DiscreteVPSDE from arbitrary betas prints their count and range, not 1000 numbers."""
    sde = sde_lib.DiscreteVPSDE([0.1, 0.2, 0.5])
    assert repr(sde) == "DiscreteVPSDE(betas=<3 betas in [0.1, 0.5]>, T=1.0)"
    assert repr(sde.reverse(lambda x, t: x, probability_flow=True)).startswith(
        "ReverseSDE(DiscreteVPSDE(betas=<3 betas")
