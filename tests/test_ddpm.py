"""The discrete DDPM chain: marginals, Bayes posterior, ELBO terms, convergence to the VP SDE."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _sde_cases import Z, var_standard_error

import sde_lib


def numpy_condition(mean, cov, x_obs_index, x_obs):
    """Conditional of a joint Gaussian (mean, cov) on the coordinates x_obs_index = x_obs."""
    idx_o = np.asarray(x_obs_index)
    idx_u = np.setdiff1d(np.arange(len(mean)), idx_o)
    S_uo = cov[np.ix_(idx_u, idx_o)]
    S_oo = cov[np.ix_(idx_o, idx_o)]
    gain = S_uo @ np.linalg.inv(S_oo)
    m = mean[idx_u] + gain @ (x_obs - mean[idx_o])
    C = cov[np.ix_(idx_u, idx_u)] - gain @ S_uo.T
    return m, C


@pytest.fixture
def chain():
    return sde_lib.DDPMChain.from_sde(sde_lib.VPSDE(0.1, 20.0, N=100))


def test_chain_arrays(chain):
    betas = np.linspace(0.1 / 100, 20.0 / 100, 100)
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(chain.betas, betas, rtol=1e-13)
    np.testing.assert_allclose(chain.alphas, 1 - betas, rtol=1e-13)
    np.testing.assert_allclose(chain.alphas_cumprod, ab, rtol=1e-12)
    np.testing.assert_allclose(chain.alphas_cumprod_prev, np.r_[1.0, ab[:-1]], rtol=1e-12)
    assert chain.N == 100


def test_q_sample_matches_step_by_step_chain(chain):
    """Running x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z step by step from a fixed x0 has
    the moments of q(x_i | x0) = N(sqrt(alpha_bar_i) x0, 1 - alpha_bar_i) at every recorded i;
    q_sample with standard normal noise has them too. Exact in distribution: MC tolerance."""
    n = 20000
    x0 = jnp.array([1.2, -0.7])
    b = chain.betas

    def step(x, inp):
        beta, key = inp
        x = jnp.sqrt(1 - beta) * x + jnp.sqrt(beta) * jax.random.normal(key, x.shape)
        return x, x

    keys = jax.random.split(jax.random.PRNGKey(0), chain.N)
    _, path = jax.lax.scan(step, jnp.broadcast_to(x0, (n, 2)), (b, keys))
    for i in (0, 5, 30, 99):
        mean, var = chain.q_mean_variance(x0[None], jnp.array([i]))
        var = float(var[0])
        direct = chain.q_sample(jnp.broadcast_to(x0, (n, 2)), jnp.full((n,), i),
                                jax.random.normal(jax.random.PRNGKey(i + 1), (n, 2)))
        for x in (np.asarray(path[i]), np.asarray(direct)):
            np.testing.assert_array_less(np.abs(x.mean(0) - mean[0]), Z * math.sqrt(var / n))
            np.testing.assert_array_less(np.abs(x.var(0, ddof=1) - var),
                                         Z * var_standard_error(var, n))


def test_q_posterior_is_bayes_rule(chain):
    """q(x_{i-1} | x_i, x0) equals conditioning the joint Gaussian of (x_{i-1}, x_i) given x0."""
    rng = np.random.default_rng(0)
    ab = np.asarray(chain.alphas_cumprod, np.float64)
    betas = np.asarray(chain.betas, np.float64)
    for i in (1, 2, 40, 99):
        x0, xi = rng.normal(size=3), rng.normal(size=3)
        v_prev = 1 - ab[i - 1]
        a = 1 - betas[i]
        mean_prev = np.sqrt(ab[i - 1]) * x0
        joint_mean = np.array([0.0, 0.0])
        means, variances = [], []
        for j in range(3):  # one coordinate at a time: the joint is a bivariate Gaussian
            joint_mean = np.array([mean_prev[j], np.sqrt(a) * mean_prev[j]])
            joint_cov = np.array([[v_prev, np.sqrt(a) * v_prev],
                                  [np.sqrt(a) * v_prev, a * v_prev + betas[i]]])
            m, C = numpy_condition(joint_mean, joint_cov, [1], xi[j:j + 1])
            means.append(m[0])
            variances.append(C[0, 0])
        mean, var = chain.q_posterior(jnp.asarray(x0)[None], jnp.asarray(xi)[None],
                                      jnp.array([i]))
        np.testing.assert_allclose(mean[0], means, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(var[0], variances[0], rtol=1e-10)
    # i = 0: x_{-1} is the data itself.
    mean, var = chain.q_posterior(jnp.ones((1, 3)), jnp.zeros((1, 3)), jnp.array([0]))
    chex.assert_trees_all_close((mean, var), (jnp.ones((1, 3)), jnp.zeros(1)), atol=1e-12)


def test_eps_conversions_and_model_mean(chain):
    """x0 <-> eps round trip through q_sample, and Ho et al. Eq. 11 equals the posterior mean at
    the predicted x0."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    x0 = jax.random.normal(k1, (6, 2, 3))
    eps = jax.random.normal(k2, (6, 2, 3))
    i = jnp.array([0, 1, 10, 50, 98, 99])
    xi = chain.q_sample(x0, i, eps)
    chex.assert_trees_all_close(chain.predict_x0_from_eps(xi, i, eps), x0, rtol=1e-9, atol=1e-9)
    chex.assert_trees_all_close(chain.predict_eps_from_x0(xi, i, x0), eps, rtol=1e-9, atol=1e-9)
    post_mean, _ = chain.q_posterior(x0, xi, i)
    chex.assert_trees_all_close(chain.p_mean(xi, i, eps), post_mean, rtol=1e-9, atol=1e-10)


def test_ancestral_step_moments(chain):
    """Ancestral step: mean p_mean, variance beta_i or beta_tilde_i; no noise at i = 0."""
    n = 20000
    xi = jnp.full((n, 1), 0.4)
    eps = jnp.full((n, 1), -0.3)
    for i, variance, expected_var in ((40, "beta", chain.betas[40]),
                                      (40, "beta_tilde", chain.posterior_variance[40]),
                                      (0, "beta", 0.0)):
        idx = jnp.full((n,), i)
        x = np.asarray(chain.ancestral_step(jax.random.PRNGKey(i), xi, idx, eps, variance))
        m = float(chain.p_mean(xi[:1], idx[:1], eps[:1])[0, 0])
        v = float(expected_var)
        if v == 0.0:
            np.testing.assert_allclose(x, m, rtol=1e-12)
            continue
        assert abs(x.mean() - m) < Z * math.sqrt(v / n)
        assert abs(x.var(ddof=1) - v) < Z * var_standard_error(v, n)
    with pytest.raises(ValueError, match="variance must be one of"):
        chain.ancestral_step(jax.random.PRNGKey(0), xi, idx, eps, "large")


def test_log_variances(chain):
    """Ho et al.'s code: fixedsmall = log beta_tilde with i = 0 taken from i = 1; fixedlarge =
    log beta with i = 0 taken from beta_tilde_1."""
    b = np.asarray(chain.betas)
    ab = np.cumprod(1 - b)
    bt = b[1:] * (1 - ab[:-1]) / (1 - ab[1:])
    i = jnp.arange(chain.N)
    np.testing.assert_allclose(chain.model_log_variance(i, "beta_tilde"),
                               np.log(np.r_[bt[0], bt]), rtol=1e-12)
    np.testing.assert_allclose(chain.model_log_variance(i, "beta"),
                               np.log(np.r_[bt[0], b[1:]]), rtol=1e-12)


def test_gaussian_kl_and_likelihoods():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 5)
    expected = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(sde_lib.gaussian_kl(m1, 2 * np.log(s1), m2, 2 * np.log(s2)),
                               expected, rtol=1e-12)
    x = rng.normal(size=5)
    np.testing.assert_allclose(sde_lib.gaussian_log_likelihood(x, m1, 2 * np.log(s1)),
                               scipy.stats.norm.logpdf(x, m1, s1), rtol=1e-12)


@pytest.mark.parametrize("mean,std", [(0.0, 0.5), (0.7, 0.05), (-0.99, 0.01), (0.3, 1e-3)])
def test_discretized_gaussian_log_likelihood(mean, std):
    """Against scipy's normal CDF on the 256 bins of [-1, 1] (edges at -inf and +inf); the bin
    probabilities sum to one."""
    levels = np.linspace(-1.0, 1.0, 256)
    edges = np.r_[-np.inf, (levels[:-1] + levels[1:]) / 2, np.inf]
    lo, hi = edges[:-1], edges[1:]
    # Differences of the CDF below the mean, of the survival function above it (no cancellation).
    with np.errstate(divide="ignore"):
        norm = scipy.stats.norm(mean, std)
        expected = np.log(np.where(lo > mean, norm.sf(lo) - norm.sf(hi),
                                   norm.cdf(hi) - norm.cdf(lo)))
    got = np.asarray(sde_lib.discretized_gaussian_log_likelihood(
        jnp.asarray(levels), mean, 2 * np.log(std)))
    finite = expected > -700  # scipy underflows to log(0) in the far tails; we stay finite
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(np.exp(got).sum(), 1.0, rtol=1e-10)


def test_elbo_terms(chain):
    """L_T, L_{i-1} and L_0 against numpy: KL of univariate Gaussians with the Bayes posterior,
    and the decoder's discretized log-likelihood."""
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, size=(3, 4))
    ab = np.asarray(chain.alphas_cumprod)
    # L_T
    m, v = np.sqrt(ab[-1]) * x0, 1 - ab[-1]
    expected = (0.5 * (v + m**2 - 1 - np.log(v))).sum(1)
    np.testing.assert_allclose(chain.prior_kl(jnp.asarray(x0)), expected, rtol=1e-10)
    # L_{i-1}, i >= 1, with eps_pred != true eps
    i = np.array([1, 37, 99])
    xi = rng.normal(size=(3, 4))
    eps_pred = rng.normal(size=(3, 4))
    q_mean, q_var = chain.q_posterior(jnp.asarray(x0), jnp.asarray(xi), jnp.asarray(i))
    p_mean = chain.p_mean(jnp.asarray(xi), jnp.asarray(i), jnp.asarray(eps_pred))
    for variance in ("beta", "beta_tilde"):
        p_var = np.exp(np.asarray(chain.model_log_variance(jnp.asarray(i), variance)))[:, None]
        qv = np.asarray(q_var)[:, None]
        kl = (np.log(np.sqrt(p_var / qv)) + (qv + (np.asarray(q_mean - p_mean)) ** 2)
              / (2 * p_var) - 0.5).sum(1)
        got = chain.vb_term(jnp.asarray(x0), jnp.asarray(xi), jnp.asarray(i),
                            jnp.asarray(eps_pred), variance)
        np.testing.assert_allclose(got, kl, rtol=1e-10)
    # L_0 with data on the 256 levels, at x_{i=0} drawn from q(x_0-state | x0) and a model eps
    # near the true noise (so the decoder's bins carry representable probabilities).
    x0 = np.round((x0 + 1) * 127.5) / 127.5 - 1
    idx = jnp.zeros(3, jnp.int32)
    noise = rng.normal(size=(3, 4))
    xi = np.asarray(chain.q_sample(jnp.asarray(x0), idx, jnp.asarray(noise)))
    eps_pred = noise + 0.5 * rng.normal(size=(3, 4))
    mean0 = np.asarray(chain.p_mean(jnp.asarray(xi), idx, jnp.asarray(eps_pred)))
    std0 = np.exp(0.5 * float(chain.model_log_variance(idx, "beta_tilde")[0]))
    edges_lo = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
    edges_hi = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
    prob = scipy.stats.norm.cdf(edges_hi, mean0, std0) - scipy.stats.norm.cdf(edges_lo, mean0,
                                                                                std0)
    got = chain.vb_term(jnp.asarray(x0), jnp.asarray(xi), idx, jnp.asarray(eps_pred))
    np.testing.assert_allclose(got, -np.log(prob).sum(1), rtol=1e-8)
    got = chain.vb_term(jnp.asarray(x0), jnp.asarray(xi), idx, jnp.asarray(eps_pred),
                        discretized=False)
    np.testing.assert_allclose(got, -scipy.stats.norm.logpdf(x0, mean0, std0).sum(1), rtol=1e-10)


def test_chain_converges_to_vp_sde_at_rate_one_over_n():
    """max_i |alpha_bar_i - alpha_t(t_i)^2| with t_i = (i + 1) / N shrinks as O(1/N)."""
    Ns = np.array([25, 100, 400, 1600, 6400])  # beta_max / N < 1 needs N > 20
    errors = []
    for N in Ns:
        vp = sde_lib.VPSDE(0.1, 20.0, N=int(N))
        chain = sde_lib.DDPMChain.from_sde(vp)
        t = (np.arange(N) + 1) / N
        alpha, _ = vp.marginal_coeffs(jnp.asarray(t))
        errors.append(float(np.max(np.abs(np.asarray(chain.alphas_cumprod) - alpha**2))))
    slope = np.polyfit(np.log(Ns), np.log(errors), 1)[0]
    msg = f"errors {errors} at N={Ns.tolist()}: measured rate N^{slope:.3f} (expected N^-1)"
    print(msg)
    assert -1.1 < slope < -0.9, msg
