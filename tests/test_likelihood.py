"""Likelihoods: probability-flow log-density, Hutchinson divergence, bits/dim, DDPM bound."""

import math

import chex
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sde_cases import SDES, Z

import sde_lib


def isotropic_gaussian(mean, var):
    """The one-component mixture N(mean, var I) as an oracle."""
    mean = np.asarray(mean, np.float64)
    d = mean.size
    return sde_lib.GaussianMixture(np.ones(1), mean[None], var * np.eye(d)[None])


def vp_coeffs(t, beta_min=0.1, beta_max=20.0):
    """alpha_t, sigma_t^2 of the linear VP SDE with T = 1 (Song et al. 2021, Eq. 33), numpy."""
    B = beta_min * t + 0.5 * t**2 * (beta_max - beta_min)
    return np.exp(-0.5 * B), -np.expm1(-B)


# ----- probability-flow log-likelihood -----------------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param("vp", marks=pytest.mark.slow), "subvp", "ve"])
def test_exact_divergence_matches_oracle_log_prob(name):
    """With the exact mixture score and exact divergence the ODE likelihood is the mixture's
    log-density within 0.01 nats per dimension at every point (issue 4). The error left is the
    prior mismatch p_T != N(0, prior_std^2) (below 0.01 nats here) plus solver error."""
    sde = SDES[name]()
    gmm = sde_lib.asymmetric_mixture_2d()
    x = gmm.sample(jax.random.PRNGKey(1), 64)
    logp, nfe = sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, gmm.score_fn(sde), x,
                                       divergence="exact")
    chex.assert_shape(logp, (64,))
    assert int(nfe) > 0
    err = np.abs(np.asarray(logp - gmm.log_prob(x)))
    assert err.max() <= 0.01 * gmm.dim, f"{name}: max error {err.max():.4g} nats"


@pytest.mark.slow
@pytest.mark.parametrize("divergence", ["exact", "rademacher", "gaussian"])
def test_gaussian_data_closed_form_and_fixed_probe(divergence):
    """Data N(m, s^2 I) with D = (3, 2): the probability flow is x_t - alpha_t m =
    sqrt(v_t / v_eps) (x_eps - alpha_eps m), v_t = alpha_t^2 s^2 + sigma_t^2, and its Jacobian is
    isotropic, int_eps^T tr J dt = D/2 log(v_T / v_eps). With a probe z held fixed for the solve,
    z^T J z = tr J |z|^2 / D, so the estimate is log p_T(x_T) + c D/2 log(v_T / v_eps) with c = 1
    (exact; Rademacher, |z|^2 = D) or |z|^2 / D (Gaussian probe z = normal(rng, x.shape), as
    documented). A probe redrawn during the solve would average c towards 1. Tolerance 1e-3
    nats: the solver's local tolerance is 1e-5 relative on values of order 10, over ~20 steps."""
    d, s2 = 6, 0.3
    m = np.linspace(-1.0, 1.0, d)
    sde = sde_lib.VPSDE()
    oracle = isotropic_gaussian(m, s2)
    x = oracle.sample(jax.random.PRNGKey(3), 8).reshape(8, 3, 2)
    rng = jax.random.PRNGKey(4)
    logp, _ = sde_lib.log_likelihood(rng, sde, oracle.score_fn(sde), x, divergence=divergence)
    chex.assert_shape(logp, (8,))

    eps, T = 1e-5, 1.0
    (a_eps, s2_eps), (a_T, s2_T) = vp_coeffs(eps), vp_coeffs(T)
    v_eps, v_T = a_eps**2 * s2 + s2_eps, a_T**2 * s2 + s2_T
    xf = np.asarray(x).reshape(8, d)
    x_T = a_T * m + np.sqrt(v_T / v_eps) * (xf - a_eps * m)
    prior = -0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(x_T**2, -1)
    c = np.ones(8)
    if divergence == "gaussian":
        z = np.asarray(jax.random.normal(rng, x.shape, x.dtype)).reshape(8, d)
        c = np.sum(z**2, -1) / d
        assert np.ptp(c) > 0.5  # the probes differ enough for the check to tell
    expected = prior + c * 0.5 * d * np.log(v_T / v_eps)
    chex.assert_trees_all_close(logp, expected, atol=1e-3)
    if divergence != "exact":  # the same key gives the same result, another key another one
        again, _ = sde_lib.log_likelihood(rng, sde, oracle.score_fn(sde), x,
                                          divergence=divergence)
        chex.assert_trees_all_equal(logp, again)
        if divergence == "gaussian":
            other, _ = sde_lib.log_likelihood(jax.random.PRNGKey(5), sde, oracle.score_fn(sde),
                                              x, divergence=divergence)
            assert np.all(np.abs(np.asarray(other - logp)) > 0)


@pytest.mark.parametrize("divergence", [pytest.param("rademacher", marks=pytest.mark.slow),
                                        "gaussian"])
def test_hutchinson_estimate_is_unbiased(divergence):
    """Hutchinson's z^T J z is unbiased for tr J, so the log-likelihood estimate is unbiased for
    the exact-divergence value. Each of 4 points of the (correlated, non-isotropic) 2-D mixture is
    repeated M = 512 times in the batch: every row gets its own probe, i.e. M independent
    estimates per point. |mean - exact| <= Z sd / sqrt(M) per point (Z = 4.5, module-wide
    false-alarm rate below 1e-3)."""
    M = 512
    sde = sde_lib.VPSDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    x = gmm.sample(jax.random.PRNGKey(7), 4)
    score_fn = gmm.score_fn(sde)
    exact, _ = sde_lib.log_likelihood(None, sde, score_fn, x, divergence="exact")
    est, _ = sde_lib.log_likelihood(jax.random.PRNGKey(8), sde, score_fn, jnp.repeat(x, M, 0),
                                    divergence=divergence)
    est = np.asarray(est).reshape(4, M)
    mean, sd = est.mean(1), est.std(1, ddof=1)
    assert np.all(sd > 0.01), f"estimates do not vary (sd {sd}): the check would be vacuous"
    se = sd / math.sqrt(M)
    assert np.all(np.abs(mean - np.asarray(exact)) <= Z * se), (
        f"{divergence}: mean {mean}, exact {np.asarray(exact)}, standard error {se}")


@pytest.mark.parametrize("chunk_elements", [42, pytest.param(10**9, marks=pytest.mark.slow)])
def test_exact_divergence_in_chunks_is_the_jacobian_trace(chunk_elements, monkeypatch):
    """The exact divergence in chunks of 3 basis vectors (D = 7: two chunks and a remainder) and
    in one chunk equals the trace of jax.jacfwd's per-example Jacobian."""
    from sde_lib import divergence
    monkeypatch.setattr(divergence, "EXACT_DIVERGENCE_CHUNK_ELEMENTS", chunk_elements)
    W = jax.random.normal(jax.random.key(0), (7, 7))
    fn = lambda y: jnp.tanh(y @ W) * y  # noqa: E731 (examples independent)
    x = jax.random.normal(jax.random.key(1), (2, 7))
    fx, div = divergence.exact_divergence(fn, x, None)
    jac = jax.vmap(jax.jacfwd(lambda v: fn(v[None])[0]))(x)
    np.testing.assert_allclose(fx, fn(x), rtol=1e-12)
    np.testing.assert_allclose(div, jnp.trace(jac, axis1=1, axis2=2), rtol=1e-10)


@pytest.mark.slow
@pytest.mark.optimized  # float32 rounding as a real run compiles it
def test_float32_likelihood_at_image_size_with_the_oracle_score():
    """d = 784 in float32 with the mixture's exact score (the case that took 2,161 NFE when the
    summed quadratic forms' rounding made the float32 divergence noise): the adaptive solve
    takes as many steps as in float64 (at most 1.2x, and <= 150 NFE), agrees with the float64
    solve on the same probes to 1e-4 nats/dim, and is within 0.01 nats/dim of the exact
    log-density (numpy's, of the two unit-covariance Gaussians; the rest is the one-probe
    Hutchinson estimate's error)."""
    D, sde = 784, sde_lib.VPSDE()
    gmm = sde_lib.gaussian_pair(jax.random.key(0), D)
    x = gmm.sample(jax.random.key(1), 8)
    results = {}
    for dtype in (jnp.float64, jnp.float32):
        g = jax.tree.map(lambda a, d=dtype: a.astype(d), gmm)
        logp, nfe = sde_lib.log_likelihood(jax.random.key(2), sde, g.score_fn(sde),
                                           x.astype(dtype))
        results[dtype] = (np.asarray(logp, np.float64), int(nfe))
    (lp64, nfe64), (lp32, nfe32) = results[jnp.float64], results[jnp.float32]
    assert nfe32 <= min(1.2 * nfe64, 150), (nfe32, nfe64)
    np.testing.assert_allclose(lp32 / D, lp64 / D, atol=1e-4)
    xs, mus = np.asarray(x, np.float64), np.asarray(gmm.means, np.float64)
    sq = ((xs[:, None, :] - mus[None]) ** 2).sum(-1)  # (8, 2)
    exact = np.logaddexp(*(np.log(0.5) - 0.5 * sq - 0.5 * D * np.log(2 * np.pi)).T)
    assert np.max(np.abs(lp32 - exact)) / D < 0.01


@pytest.mark.parametrize("fixed", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_nfe_counts_vector_field_evaluations(fixed):
    """The reported NFE equals the number of times the solve evaluates score_fn, counted by a
    host callback (one per evaluation of the ODE's vector field); adaptive and fixed steps."""
    sde = sde_lib.VESDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    exact_score = gmm.score_fn(sde)
    calls = []

    def score_fn(x, t):
        jax.debug.callback(lambda t: calls.append(1), t)
        return exact_score(x, t)

    x = gmm.sample(jax.random.PRNGKey(1), 8)
    settings = [("tsit5", None), ("dopri5", None)]
    if fixed:
        settings = [("euler", 7), ("heun", 7), ("tsit5", 7)]
    for solver, num_steps in settings:
        calls.clear()
        logp, nfe = sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, score_fn, x,
                                           solver=solver, rtol=1e-3, atol=1e-3,
                                           num_steps=num_steps)
        jax.block_until_ready(logp)
        assert int(nfe) == len(calls), (solver, int(nfe), len(calls))
        if num_steps:  # K, 2K, 6K + 1
            assert int(nfe) == {"euler": 7, "heun": 14, "tsit5": 43}[solver]


def _fixed_step_likelihood_against_step_to(settings, sweep):
    from _compiles import count_compilations

    sde = sde_lib.VPSDE(beta_max=19.0)  # an SDE no other test uses: the first call compiles
    gmm = sde_lib.asymmetric_mixture_2d()
    score_fn = gmm.score_fn(sde)
    x = gmm.sample(jax.random.PRNGKey(1), 5)
    z = jax.random.rademacher(jax.random.PRNGKey(0), x.shape, x.dtype)
    flow = sde.reverse(score_fn, probability_flow=True)

    def field(t, y, args):
        tb = jnp.full((5,), t)
        drift, vjp = jax.jvp(lambda v: flow.sde(v, tb)[0], (y[0],), (z,))
        return drift, jnp.sum(vjp * z, axis=1)

    for solver, cls, steps in settings:
        for k in steps:
            ts = sde_lib.sampling.evaluation_times("logsnr", k + 1, sde, 1e-5)[::-1]
            sol = diffrax.diffeqsolve(diffrax.ODETerm(field), cls(), ts[0], ts[-1], None,
                                      (x, jnp.zeros(5)), stepsize_controller=diffrax.StepTo(
                                          jnp.asarray(ts)), max_steps=k)
            want = sde.prior_logp(sol.ys[0][-1]) + sol.ys[1][-1]
            got, _ = sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, score_fn, x,
                                            solver=solver, num_steps=k)
            np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=f"{solver}, K = {k}")
    if not sweep:
        return
    with count_compilations() as compiles:
        for k in (2, 3, 5, 10, 20, 40):
            sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, score_fn, x, solver="heun",
                                   num_steps=k, max_steps=64)
        sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, score_fn, x, solver="heun",
                               num_steps=4, max_steps=64, time_grid="karras")
    assert len([c for c in compiles if "_log_likelihood_fixed" in c.name]) == 1, compiles


@pytest.mark.slow
def test_fixed_step_likelihood_is_diffrax_step_to():
    """With ``num_steps`` the likelihood (its grid padded to ``max_steps + 1`` times, stepped
    with a traced trip count) is diffrax's ``diffeqsolve`` with ``StepTo`` on the same grid
    (the reference here, float64, 1e-10): Heun at 7 steps."""
    _fixed_step_likelihood_against_step_to([("heun", diffrax.Heun, (7,))], sweep=False)


@pytest.mark.slow
def test_fixed_step_likelihood_for_every_solver_compiles_once():
    """As above for Euler, Heun and Tsit5 (its first-same-as-last stage carried), at 1 and 7
    steps; and a 6-point sweep of ``num_steps`` and a new grid compile the fixed-step program
    once (XLA compilations counted)."""
    _fixed_step_likelihood_against_step_to(
        [("euler", diffrax.Euler, (1, 7)), ("heun", diffrax.Heun, (1, 7)),
         ("tsit5", diffrax.Tsit5, (1, 7))], sweep=True)


@pytest.mark.slow
@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_fixed_step_likelihood_converges_at_the_solver_order(solver, order):
    """Gaussian data, exact divergence, the closed form of the test above: with K fixed steps
    (uniform grid and logsnr grid) the largest error over 8 points falls by 2^order per doubling
    of K (measured exponent within 0.15 of the order from K = 40 to 80), and is below 0.1 nats
    (Euler) or 0.005 (Heun) at K = 80."""
    d, s2 = 6, 0.3
    m = np.linspace(-1.0, 1.0, d)
    sde = sde_lib.VPSDE()
    oracle = isotropic_gaussian(m, s2)
    x = np.asarray(oracle.sample(jax.random.PRNGKey(3), 8))
    eps = 1e-5
    (a_eps, s2_eps), (a_T, s2_T) = vp_coeffs(eps), vp_coeffs(1.0)
    v_eps, v_T = a_eps**2 * s2 + s2_eps, a_T**2 * s2 + s2_T
    x_T = a_T * m + np.sqrt(v_T / v_eps) * (x - a_eps * m)
    expected = (-0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(x_T**2, -1)
                + 0.5 * d * np.log(v_T / v_eps))
    for grid in ("uniform", "logsnr"):
        errors = []
        for K in (40, 80):
            logp, _ = sde_lib.log_likelihood(None, sde, oracle.score_fn(sde), x,
                                             divergence="exact", solver=solver, num_steps=K,
                                             time_grid=grid)
            errors.append(np.abs(np.asarray(logp) - expected).max())
        measured = math.log2(errors[0] / errors[1])
        assert abs(measured - order) < 0.15, (grid, errors, measured)
        assert errors[1] < {1: 0.1, 2: 0.005}[order], (grid, errors)


# ----- bits per dimension ------------------------------------------------------------------------

@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0), (-1 - 1 / 255, 1 + 1 / 255)])
def test_bits_per_dim_is_exact_for_piecewise_constant_density(data_range):
    """A density constant on each dequantization bin, p(x) = P_k / w, makes the dequantization
    bound an equality: the bits/dim of dequantized samples must be -log2 P(k) / D exactly, for
    any scaling of the data. Also: uniform 8-bit data has 8 bits/dim."""
    D, num_bins = 3, 256
    lo, hi = data_range
    w = (hi - lo) / num_bins
    P = np.random.default_rng(0).dirichlet(np.ones(num_bins), size=D)  # (D, 256) bin masses
    k = jax.random.randint(jax.random.PRNGKey(0), (500, D), 0, num_bins)
    x = sde_lib.uniform_dequantize(jax.random.PRNGKey(1), k, data_range, num_bins)
    k_of_x = np.clip(np.floor((np.asarray(x) - lo) / w).astype(int), 0, num_bins - 1)
    logp = np.sum(np.log(P[np.arange(D), k_of_x] / w), -1)
    bpd = sde_lib.bits_per_dim(logp, D, data_range, num_bins)
    expected = -np.sum(np.log2(P[np.arange(D), np.asarray(k)]), -1) / D
    chex.assert_trees_all_close(bpd, expected, rtol=1e-10)
    uniform = sde_lib.bits_per_dim(jnp.full((2,), -D * math.log(hi - lo)), D, data_range, 256)
    chex.assert_trees_all_close(uniform, jnp.full((2,), 8.0), rtol=1e-12)


def test_bits_per_dim_score_sde_offset():
    """score_sde: bpd = -logp / (D ln 2) + 7 - inverse_scaler(-1), i.e. +7 bits for data in
    [-1, 1] and +8 for [0, 1]."""
    logp, D = jnp.array([-3000.0, 1234.5]), 3072
    chex.assert_trees_all_close(sde_lib.bits_per_dim(logp, D, (-1.0, 1.0), 256),
                                -logp / (D * math.log(2)) + 7.0, rtol=1e-12)
    chex.assert_trees_all_close(sde_lib.bits_per_dim(logp, D, (0.0, 1.0), num_bins=256),
                                -logp / (D * math.log(2)) + 8.0, rtol=1e-12)


def test_bits_per_dim_assumes_no_number_of_levels():
    """The data's range and number of levels are arguments without defaults: a mixture's
    log-density no longer gets an 8-bit offset silently, and 17-level data gets log2(17) bits
    for a uniform density."""
    with pytest.raises(TypeError, match="data_range.*num_bins"):
        sde_lib.bits_per_dim(jnp.zeros(2), 2)
    with pytest.raises(TypeError, match="num_bins"):
        sde_lib.bits_per_dim(jnp.zeros(2), 2, (-1.0, 1.0))
    with pytest.raises(TypeError, match="data_range.*num_bins"):
        sde_lib.uniform_dequantize(jax.random.PRNGKey(0), jnp.zeros(2, jnp.int32))
    D = 4
    uniform = sde_lib.bits_per_dim(jnp.full((3,), -D * math.log(2.0)), D, (-1.0, 1.0), 17)
    chex.assert_trees_all_close(uniform, jnp.full((3,), math.log2(17)), rtol=1e-12)


def test_uniform_dequantize():
    """Each value lies in its level's bin; u = (x - lo) / w - k is U[0, 1): mean 1/2 within
    Z sqrt(1/12 / n); the same key gives the same values."""
    k = jax.random.randint(jax.random.PRNGKey(2), (64, 4, 4, 3), 0, 256).astype(jnp.uint8)
    x = sde_lib.uniform_dequantize(jax.random.PRNGKey(3), k, (-1.0, 1.0), 256)
    chex.assert_shape(x, k.shape)
    u = (np.asarray(x) + 1.0) * 128.0 - np.asarray(k, np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) <= Z * math.sqrt(1 / 12 / u.size)
    chex.assert_trees_all_equal(x, sde_lib.uniform_dequantize(jax.random.PRNGKey(3), k,
                                                              (-1.0, 1.0), 256))


# ----- discrete DDPM negative ELBO ---------------------------------------------------------------

def expected_negative_elbo_gaussian(x0, m, s2, N, variance, decoder_variance, index=None):
    """E_{x_i ~ q(x_i|x0)} of the negative ELBO for data N(m, s2 I) with the exact score at
    t_i = (i+1)/N, the VP chain betas linspace(1e-4, 0.02) * 1000 / N, a Gaussian decoder;
    with ``index`` (increasing chain indices) the chain respaced to them: alpha_bar_index and
    betas 1 - alpha_bar_k / alpha_bar_{k-1} (Nichol & Dhariwal 2021, Sec. 4), the score at
    (index + 1) / N. Written from Ho et al. Eqs. 4-7, 11: the mean error mu_tilde - mu_theta =
    A x_i + b is affine in x_i ~ N(a x0, v I), so E|A x_i + b|^2 = |A a x0 + b|^2 + A^2 v D."""
    D = x0.size
    index = np.arange(N) if index is None else np.asarray(index)
    ab = np.cumprod(1 - np.linspace(0.1 / N, 20.0 / N, N))[index]
    ab_prev = np.r_[1.0, ab[:-1]]
    beta = 1 - ab / ab_prev
    beta_tilde = beta * (1 - ab_prev) / (1 - ab)

    def model_mean_coeffs(i):  # mu_theta(x_i) = P x_i + q, eps = -sqrt(1 - ab_i) score
        a_t, s2_t = vp_coeffs((index[i] + 1) / N)
        k = 1.0 / (a_t**2 * s2 + s2_t)  # score(x) = -k (x - a_t m)
        return (1 - beta[i] * k) / np.sqrt(1 - beta[i]), beta[i] * k * a_t * m / np.sqrt(
            1 - beta[i])

    total = 0.5 * D * (1 - ab[-1] - 1 - np.log(1 - ab[-1])) + 0.5 * ab[-1] * np.sum(x0**2)
    for i in range(1, len(index)):
        P, q = model_mean_coeffs(i)
        c0 = beta[i] * np.sqrt(ab_prev[i]) / (1 - ab[i])
        c1 = (1 - ab_prev[i]) * np.sqrt(1 - beta[i]) / (1 - ab[i])
        A, b = c1 - P, c0 * x0 - q
        mse = np.sum((A * np.sqrt(ab[i]) * x0 + b) ** 2) + A**2 * (1 - ab[i]) * D
        var = {"beta": beta[i], "beta_tilde": beta_tilde[i]}[variance]
        r = beta_tilde[i] / var
        total += 0.5 * D * (r - 1 - np.log(r)) + mse / (2 * var)
    P, q = model_mean_coeffs(0)
    var0 = {"beta": beta[0], "beta_tilde": beta_tilde[1]}[decoder_variance]
    mse0 = np.sum(((1 - P * np.sqrt(ab[0])) * x0 - q) ** 2) + P**2 * (1 - ab[0]) * D
    return total + 0.5 * D * np.log(2 * np.pi * var0) + mse0 / (2 * var0)


@pytest.mark.parametrize("variance, decoder_variance",
                         [("beta", "beta"), ("beta_tilde", "beta_tilde"), ("beta", "beta_tilde")])
def test_negative_elbo_matches_closed_form_for_gaussian_data(variance, decoder_variance):
    """Gaussian data, exact score, N = 30: the average over M = 16000 draws (every row its own
    x_i ~ q(x_i | x0) for every i) of the Gaussian-decoder negative ELBO of one point x0 equals
    the closed-form expectation within Z sd / sqrt(M) (about 0.05 nats for beta_i variances)."""
    N, M, s2 = 30, 16000, 0.5
    m = np.array([0.8, -0.4])
    x0 = np.array([1.3, 0.2])
    sde = sde_lib.VPSDE(N=N)
    oracle = isotropic_gaussian(m, s2)
    out = sde_lib.ddpm_negative_elbo(jax.random.PRNGKey(0), sde, oracle.score_fn(sde),
                                     jnp.tile(x0, (M, 1)), variance=variance,
                                     decoder="gaussian", decoder_variance=decoder_variance)
    chex.assert_shape(out.total, (M,))
    expected = expected_negative_elbo_gaussian(x0, m, s2, N, variance, decoder_variance)
    total = np.asarray(out.total)
    se = total.std(ddof=1) / math.sqrt(M)
    assert abs(total.mean() - expected) <= Z * se, (total.mean(), expected, se)


def test_strided_negative_elbo_sweep_compiles_once():
    """The strided chains are padded to the whole chain's N entries and their terms run with a
    traced trip count: after the first, a 6-point sweep of ``num_steps`` and a new grid
    compile nothing (XLA compilations counted). ``K = 7`` on the uniform grid (the indices of
    the slow test below) against the respaced closed form (Z sd / sqrt(M)); every value finite
    down to ``K = 1``."""
    from _compiles import count_compilations

    N, M, s2 = 30, 4000, 0.5
    m, x0 = np.array([0.8, -0.4]), np.array([1.3, 0.2])
    sde = sde_lib.VPSDE(N=N)
    score_fn = isotropic_gaussian(m, s2).score_fn(sde)
    rng, x = jax.random.PRNGKey(0), jnp.tile(x0, (M, 1))

    def elbo(k, **kw):
        return sde_lib.ddpm_negative_elbo(rng, sde, score_fn, x, variance="beta",
                                          decoder="gaussian", num_steps=k, **kw).total

    total = np.asarray(elbo(7))
    se = total.std(ddof=1) / math.sqrt(M)
    expected = expected_negative_elbo_gaussian(x0, m, s2, N, "beta", "beta",
                                               [0, 5, 10, 14, 19, 24, 29])
    assert abs(total.mean() - expected) <= Z * se, (total.mean(), expected, se)
    with count_compilations() as compiles:
        for k in (1, 3, 5, 10, 20, 30):
            assert np.all(np.isfinite(elbo(k)))
        elbo(4, time_grid="quadratic")
    assert not [c for c in compiles if "_negative_elbo" in c.name], compiles


@pytest.mark.slow
@pytest.mark.parametrize("variance, time_grid, index", [
    ("beta", "uniform", [0, 5, 10, 14, 19, 24, 29]),  # round(29 u): 14.5 rounds to even
    ("beta_tilde", "quadratic", [0, 1, 2, 5, 9, 15, 21, 29])])
def test_strided_negative_elbo_matches_closed_form(variance, time_grid, index):
    """The bound of the K-step strided chain that ddpm_ancestral at num_steps = K steps through
    (N = 30; the chain indices written out from the grids: uniform t_k = 1/30 + (29/30) u_k,
    quadratic with u_k^2, u_k = linspace(1, 0, K), rounded to (i + 1) / 30) against the respaced
    closed form, as above (Z sd / sqrt(M)); with K = N it is the whole chain's, draw for draw."""
    N, M, s2 = 30, 16000, 0.5
    m, x0 = np.array([0.8, -0.4]), np.array([1.3, 0.2])
    sde = sde_lib.VPSDE(N=N)
    oracle = isotropic_gaussian(m, s2)
    rng, x = jax.random.PRNGKey(0), jnp.tile(x0, (M, 1))
    out = sde_lib.ddpm_negative_elbo(rng, sde, oracle.score_fn(sde), x, variance=variance,
                                     decoder="gaussian", num_steps=len(index),
                                     time_grid=time_grid)
    expected = expected_negative_elbo_gaussian(x0, m, s2, N, variance, variance, index)
    total = np.asarray(out.total)
    se = total.std(ddof=1) / math.sqrt(M)
    assert abs(total.mean() - expected) <= Z * se, (total.mean(), expected, se)
    whole = expected_negative_elbo_gaussian(x0, m, s2, N, variance, variance)
    assert expected - whole > 10 * se  # coarser chains bound worse: the test tells them apart
    full = [sde_lib.ddpm_negative_elbo(rng, sde, oracle.score_fn(sde), x[:64], variance=variance,
                                       decoder="gaussian", **kw).total
            for kw in ({}, {"num_steps": N, "time_grid": "uniform"})]
    chex.assert_trees_all_close(full[0], full[1], rtol=1e-6)


def test_negative_elbo_terms_and_discretized_decoder():
    """On 8-bit data in [-1, 1]: total = L_T + sum L_{i-1} + L_0 with every term >= 0 (KLs, and
    -log of a bin probability), bpd = total / (D ln 2); the decoder choice changes L_0 only."""
    sde = sde_lib.VPSDE(N=50)
    gmm = sde_lib.ring_of_gaussians(radius=0.6, std=0.2)
    k = jnp.clip(jnp.round((gmm.sample(jax.random.PRNGKey(0), 32) + 1) * 127.5), 0, 255)
    x = k / 127.5 - 1.0
    rng = jax.random.PRNGKey(1)
    disc = sde_lib.ddpm_negative_elbo(rng, sde, gmm.score_fn(sde), x)
    cont = sde_lib.ddpm_negative_elbo(rng, sde, gmm.score_fn(sde), x, decoder="gaussian")
    chex.assert_trees_all_close(disc.total, disc.prior + disc.diffusion + disc.decoder)
    chex.assert_trees_all_close(disc.bpd, disc.total / (2 * math.log(2)))
    assert np.all(np.asarray(disc.prior) >= 0) and np.all(np.asarray(disc.diffusion) >= 0)
    assert np.all(np.asarray(disc.decoder) >= 0)
    chex.assert_trees_all_equal((disc.prior, disc.diffusion), (cont.prior, cont.diffusion))


# the chain of the x64 call, cached per SDE, is reused (truncated to float32) with x64 off
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
def test_negative_elbo_keeps_the_datas_dtype():
    """Under x64 (the tests' setting) the chain's coefficients are float64; a float32 batch
    still reaches the model as float32 (a float32 network fed float64 inputs would compute in
    float64), and its bound is the one computed without x64 (the same float32 draws) to float32
    precision."""
    x = np.asarray(sde_lib.ring_of_gaussians(radius=0.6, std=0.2).sample(
        jax.random.PRNGKey(0), 8), np.float32)
    seen = set()

    def elbo():  # the mixture and the SDE built in the x64 setting of the call
        sde, gmm = sde_lib.VPSDE(N=50), sde_lib.ring_of_gaussians(radius=0.6, std=0.2)

        def score_fn(x_t, t):
            seen.add((x_t.dtype, t.dtype))
            return gmm.score_fn(sde)(x_t, t)

        return np.asarray(sde_lib.ddpm_negative_elbo(jax.random.PRNGKey(1), sde, score_fn,
                                                     jnp.asarray(x), decoder="gaussian").total)

    low = elbo()
    assert seen == {(jnp.dtype("float32"), jnp.dtype("float32"))}, seen
    with jax.enable_x64(False):
        plain = elbo()
    np.testing.assert_allclose(low, plain, rtol=2e-4)


@pytest.mark.slow
def test_negative_elbo_bounds_true_nll_and_closes_as_n_grows():
    """Continuous 8-Gaussian ring data, exact score, Gaussian decoder, beta_i variances with the
    decoder variance beta_0: E_data[-ELBO - (-log p(x0))] = KL(p_data || p_model) + E[gap] >= 0,
    and the gap shrinks as N grows. The same n = 4096 data points and the same key (so the same
    noise draws for index i) for every N: the comparison between N is paired, its standard error
    that of the per-point differences. Checked: mean gap >= -Z se for every N, strictly
    decreasing by more than Z paired se, and the largest N within Z se of 0."""
    gmm = sde_lib.ring_of_gaussians()
    x = gmm.sample(jax.random.PRNGKey(1), 4096)
    nll = -np.asarray(gmm.log_prob(x))
    gaps, ses, diffs = [], [], []
    Ns = (25, 100, 1000)
    for N in Ns:
        sde = sde_lib.VPSDE(N=N)
        out = sde_lib.ddpm_negative_elbo(jax.random.PRNGKey(2), sde, gmm.score_fn(sde), x,
                                         variance="beta", decoder="gaussian")
        diffs.append(np.asarray(out.total) - nll)
        gaps.append(diffs[-1].mean())
        ses.append(diffs[-1].std(ddof=1) / math.sqrt(x.shape[0]))
    trend = ", ".join(f"N={N}: {g:.4f} +- {s:.4f}" for N, g, s in zip(Ns, gaps, ses, strict=True))
    msg = f"mean (-ELBO) - (true NLL) in nats: {trend}"
    assert all(g >= -Z * s for g, s in zip(gaps, ses, strict=True)), msg
    for a, b in zip(diffs[:-1], diffs[1:], strict=True):
        se_diff = (a - b).std(ddof=1) / math.sqrt(a.size)
        assert a.mean() - b.mean() > Z * se_diff, msg
    assert abs(gaps[-1]) <= Z * ses[-1], msg
    print(msg)  # the trend, shown with pytest -s


def test_several_probes_are_each_the_closed_form_with_their_own_probe():
    """``num_probes = M`` Gaussian probes ``z = normal(rng, (M, *x.shape))``, held fixed: on
    data N(m, s^2 I) (isotropic Jacobian, as in the closed-form test above) probe ``k``'s
    estimate is ``log p_T(x_T) + c_k D/2 log(v_T / v_eps)``, ``c_k = |z_k|^2 / D`` per example;
    ``per_probe`` returns the M rows, the default their mean. Tolerance as above."""
    d, s2, M, B = 6, 0.3, 3, 4
    m = np.linspace(-1.0, 1.0, d)
    sde = sde_lib.VPSDE()
    oracle = isotropic_gaussian(m, s2)
    x = oracle.sample(jax.random.PRNGKey(3), B)
    rng = jax.random.PRNGKey(4)
    rows, _ = sde_lib.log_likelihood(rng, sde, oracle.score_fn(sde), x, divergence="gaussian",
                                     num_probes=M, per_probe=True)
    mean, _ = sde_lib.log_likelihood(rng, sde, oracle.score_fn(sde), x, divergence="gaussian",
                                     num_probes=M)
    chex.assert_shape((rows, mean), ((M, B), (B,)))
    (a_eps, s2_eps), (a_T, s2_T) = vp_coeffs(1e-5), vp_coeffs(1.0)
    v_eps, v_T = a_eps**2 * s2 + s2_eps, a_T**2 * s2 + s2_T
    x_T = a_T * m + np.sqrt(v_T / v_eps) * (np.asarray(x) - a_eps * m)
    prior = -0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(x_T**2, -1)
    z = np.asarray(jax.random.normal(rng, (M, B, d), x.dtype))
    c = np.sum(z**2, -1) / d
    assert np.ptp(c) > 0.5  # the probes differ enough for the check to tell
    expected = prior + c * 0.5 * d * np.log(v_T / v_eps)
    chex.assert_trees_all_close(rows, expected, atol=1e-3)
    chex.assert_trees_all_close(mean, expected.mean(0), atol=1e-3)


@pytest.mark.slow
def test_several_probes_standard_error_covers_the_exact_value():
    """On the correlated 2-D mixture, ``num_probes = M = 16`` Gaussian probes per
    example for 64 points: each point's mean over its probes, minus the exact-divergence value,
    divided by the probes' standard error (sd / sqrt(M)), is Student-t with 15 degrees of
    freedom when the probes are unbiased and independent; the mean of its square over the 64
    points is 15 / 13 = 1.154 with sd 0.23 (Var t^2 = 3.39 at 15 df), so it must lie in
    [0.45, 1.85] (3 sd). A standard error 2x too small or large, or a bias of one standard
    error, fails."""
    M, B = 16, 64
    sde = sde_lib.VPSDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    x = gmm.sample(jax.random.PRNGKey(7), B)
    score_fn = gmm.score_fn(sde)
    exact, _ = sde_lib.log_likelihood(None, sde, score_fn, x, divergence="exact", rtol=1e-7,
                                      atol=1e-7)
    rows, nfe = sde_lib.log_likelihood(jax.random.PRNGKey(8), sde, score_fn, x,
                                       divergence="gaussian", num_probes=M, per_probe=True,
                                       rtol=1e-7, atol=1e-7)
    rows = np.asarray(rows)
    sd = rows.std(0, ddof=1)
    assert np.all(sd > 0.01), f"estimates do not vary (sd {sd}): the check would be vacuous"
    t = (rows.mean(0) - np.asarray(exact)) / (sd / math.sqrt(M))
    assert 0.45 <= np.mean(t**2) <= 1.85, f"mean t^2 = {np.mean(t**2):.3f}, t = {t}"


# ----- bad input ---------------------------------------------------------------------------------

def _never_traced(x, t):
    raise AssertionError("score_fn was traced: validation must come before compilation")


@pytest.mark.parametrize("kwargs, match", [
    ({"divergence": "hutch"}, r"divergence must be one of \('exact', 'rademacher', 'gaussian'\)"),
    ({"solver": "rk4"}, r"solver must be one of \('tsit5', 'dopri5', 'euler', 'heun'\)"),
    ({"solver": "heun"}, "solver='heun' takes fixed steps: give num_steps"),
    ({"num_steps": 0}, "num_steps must be an integer >= 1"),
    ({"num_steps": 9, "max_steps": 8}, "num_steps must be at most max_steps=8"),
    ({"num_steps": 4, "time_grid": "leading"}, r"time_grid must run from T"),
    ({"num_steps": 4, "time_grid": "cubic"}, "time_grid must be one of"),
    ({"num_steps": 2, "time_grid": [1.0, 1e-5]}, "time_grid must be a grid kind or num_steps"),
    ({"eps": 0.0}, r"eps must be .* \(0, T\)"),
    ({"eps": 1.0}, r"eps must be .* \(0, T\)"),
    ({"eps": -1e-3}, r"eps must be .* \(0, T\)"),
    ({"rtol": 0.0}, "rtol must be a positive"),
    ({"atol": -1.0}, "atol must be a positive"),
    ({"max_steps": 0}, "max_steps must be an integer >= 1"),
    ({"num_probes": 0}, "num_probes must be an integer >= 1"),
    ({"num_probes": 2, "divergence": "exact"}, "num_probes must be 1 with divergence='exact'"),
])
def test_log_likelihood_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.log_likelihood(jax.random.PRNGKey(0), sde_lib.VPSDE(), _never_traced,
                               jnp.zeros((2, 2)), **kwargs)


@pytest.mark.slow
def test_concrete_data_inside_a_callers_jit():
    """The finiteness check of concrete data runs on the host: data closed over by a caller's
    jit (as the experiment modules do) is not traced into a boolean."""
    x = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
    fn = jax.jit(lambda k: sde_lib.log_likelihood(k, sde_lib.VPSDE(), lambda y, t: -y, x,
                                                  divergence="exact")[0])
    direct, _ = sde_lib.log_likelihood(None, sde_lib.VPSDE(), lambda y, t: -y, x,
                                       divergence="exact")
    chex.assert_trees_all_close(fn(jax.random.PRNGKey(0)), direct, rtol=1e-6)


def test_bad_input_elbo_and_bits_per_dim():
    x, rng = jnp.zeros((2, 2)), jax.random.PRNGKey(0)
    for bad, match in ((jnp.zeros(2), "x must have shape"), (jnp.zeros((0, 2)), "B >= 1"),
                       (jnp.array([[0.0, jnp.nan]]), "x must be finite")):
        with pytest.raises(ValueError, match=match):
            sde_lib.log_likelihood(rng, sde_lib.VPSDE(), _never_traced, bad)
        with pytest.raises(ValueError, match=match):
            sde_lib.ddpm_negative_elbo(rng, sde_lib.VPSDE(), _never_traced, bad)
    vp = sde_lib.VPSDE(N=100)
    for kwargs, match in [({"variance": "large"}, r"variance must be one of \('beta', "),
                          ({"decoder": "logistic"}, r"decoder must be one of \('discretized', "),
                          ({"decoder_variance": "x"}, "decoder_variance must be one of"),
                          ({"num_steps": 101}, r"num_steps must be in 1 \.\. N = 100"),
                          ({"num_steps": 0}, "num_steps must be an integer >= 1"),
                          ({"num_steps": 5, "time_grid": "cubic"}, "time_grid must be one of")]:
        with pytest.raises(ValueError, match=match):
            sde_lib.ddpm_negative_elbo(rng, vp, _never_traced, x, **kwargs)
    with pytest.raises(ValueError, match="sde must have a DDPM chain"):
        sde_lib.ddpm_negative_elbo(rng, sde_lib.subVPSDE(), _never_traced, x)
    with pytest.raises(ValueError, match=r"betas must lie in the open interval \(0, 1\)"):
        sde_lib.ddpm_negative_elbo(rng, sde_lib.VPSDE(N=10), _never_traced, x)  # beta_i >= 1
    with pytest.raises(ValueError, match="data_range must be"):
        sde_lib.bits_per_dim(jnp.zeros(2), 2, data_range=(1.0, -1.0), num_bins=256)
    with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
        sde_lib.uniform_dequantize(rng, jnp.zeros(2), (-1.0, 1.0), num_bins=0)
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        sde_lib.bits_per_dim(jnp.zeros(2), 0, (-1.0, 1.0), 256)
