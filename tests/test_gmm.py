"""Gaussian-mixture oracle and Tweedie's formula against independent numpy/scipy references."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _sde_cases import SDES, Z

import sde_lib
from sde_lib import parameterization


def np_mixture_logpdf_and_score(x, w, mu, cov):
    """Reference: scipy log-density and the responsibility-weighted component scores."""
    logc = np.stack([np.log(w[k]) + np.atleast_1d(
        scipy.stats.multivariate_normal(mu[k], cov[k]).logpdf(x)) for k in range(len(w))], -1)
    logp = scipy.special.logsumexp(logc, -1)
    resp = np.exp(logc - logp[:, None])
    comp = np.stack([-(x - mu[k]) @ np.linalg.inv(cov[k]).T for k in range(len(w))], 1)
    return logp, np.einsum("bk,bkd->bd", resp, comp)


def np_posterior(w, mu, cov, A, y, sigma_y):
    """Reference in information form: P = (Sigma^-1 + A^T A / s^2)^-1,
    m = P (Sigma^-1 mu + A^T y / s^2), weights w_k N(y; A mu_k, A Sigma_k A^T + s^2 I)."""
    K, d = mu.shape
    means, covs, logw = [], [], []
    for k in range(K):
        prec = np.linalg.inv(cov[k])
        P = np.linalg.inv(prec + A.T @ A / sigma_y**2)
        means.append(P @ (prec @ mu[k] + A.T @ y / sigma_y**2))
        covs.append(P)
        S = A @ cov[k] @ A.T + sigma_y**2 * np.eye(A.shape[0])
        logw.append(np.log(w[k]) + scipy.stats.multivariate_normal(A @ mu[k], S).logpdf(y))
    logw = np.array(logw)
    return np.exp(logw - scipy.special.logsumexp(logw)), np.array(means), np.array(covs)


def mixture_moments(w, means, covs):
    m = w @ means
    C = np.einsum("k,kij->ij", w, covs + means[:, :, None] * means[:, None, :]) - np.outer(m, m)
    return m, C


@pytest.fixture
def gmm():
    return sde_lib.asymmetric_mixture_2d()


def test_log_prob_and_score(gmm):
    x = np.random.default_rng(0).normal(size=(7, 2)) * 2
    logp, score = np_mixture_logpdf_and_score(x, *(np.asarray(a) for a in
                                                    (gmm.weights, gmm.means, gmm.covs)))
    np.testing.assert_allclose(jax.jit(gmm.log_prob)(x), logp, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(gmm.score)(x), score, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "ou"])
def test_marginal_and_exact_score(name, gmm):
    """p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I); score_fn matches the numpy
    score of that mixture, and log_prob_fn its scipy density, for per-example times."""
    sde = SDES[name]()
    w, mu, cov = (np.asarray(a) for a in (gmm.weights, gmm.means, gmm.covs))
    x = np.random.default_rng(1).normal(size=(5, 2)) * 2
    t = np.array([0.01, 0.2, 0.5, 0.7, 1.0]) * sde.T
    alpha, sigma = (np.asarray(a) for a in sde.marginal_coeffs(jnp.asarray(t)))
    score = jax.jit(gmm.score_fn(sde))(jnp.asarray(x), jnp.asarray(t))
    logp = jax.jit(gmm.log_prob_fn(sde))(jnp.asarray(x), jnp.asarray(t))
    for b in range(5):
        cov_t = alpha[b] ** 2 * cov + sigma[b] ** 2 * np.eye(2)
        lp, sc = np_mixture_logpdf_and_score(x[b:b + 1], w, alpha[b] * mu, cov_t)
        np.testing.assert_allclose(score[b], sc[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(logp[b], lp[0], rtol=1e-12)
        marg = gmm.marginal(sde, t[b])
        chex.assert_trees_all_close((marg.means, marg.covs), (alpha[b] * mu, cov_t), rtol=1e-12)
    # Any (B, *D) with prod(D) = d.
    chex.assert_shape(gmm.score_fn(sde)(jnp.ones((3, 1, 2)), jnp.full(3, 0.5)), (3, 1, 2))


def test_moments_and_sampling(gmm):
    w, mu, cov = (np.asarray(a) for a in (gmm.weights, gmm.means, gmm.covs))
    m, C = mixture_moments(w, mu, cov)
    chex.assert_trees_all_close((gmm.mean(), gmm.covariance()), (m, C), rtol=1e-12)
    n = 40000
    x = np.asarray(jax.jit(gmm.sample, static_argnums=1)(jax.random.PRNGKey(0), n))
    np.testing.assert_array_less(np.abs(x.mean(0) - m), Z * np.sqrt(np.diag(C) / n))
    xc = x - x.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]
    np.testing.assert_array_less(np.abs(prods.mean(0) - C), Z * prods.std(0) / math.sqrt(n))
    # Component frequencies: binomial standard errors; the component of a sample is recovered
    # from which mean its sample is closest to in the Mahalanobis sense is not exact, so sample
    # the labels through the same categorical draw instead.
    k = np.asarray(jax.random.categorical(jax.random.split(jax.random.PRNGKey(0))[0],
                                          jnp.log(gmm.weights), shape=(n,)))
    freq = np.bincount(k, minlength=3) / n
    np.testing.assert_array_less(np.abs(freq - w), Z * np.sqrt(w * (1 - w) / n))


def test_condition_matches_information_form(gmm):
    """p(x0 | y) for y = A x0 + sigma_y z: Kalman form in the library, information form here."""
    A = np.array([[1.0, -0.5]])
    y = np.array([0.8])
    for sigma_y in (0.05, 0.5, 2.0):
        post = jax.jit(gmm.condition)(A, y, sigma_y)
        ref = np_posterior(*(np.asarray(a) for a in (gmm.weights, gmm.means, gmm.covs)),
                           A, y, sigma_y)
        chex.assert_trees_all_close((post.weights, post.means, post.covs), ref, rtol=1e-9,
                                    atol=1e-12)


@pytest.mark.slow
def test_condition_by_monte_carlo(gmm):
    """Independent of any formula: importance-reweight prior samples by the likelihood of y and
    compare the weighted mean with the posterior mean (tolerance from the effective sample size)."""
    A = np.array([[0.6, 0.8]])
    y, sigma_y = np.array([0.3]), 0.4
    x = np.asarray(gmm.sample(jax.random.PRNGKey(5), 400000))
    logw = -0.5 * ((x @ A.T - y) ** 2).sum(1) / sigma_y**2
    wts = np.exp(logw - logw.max())
    wts /= wts.sum()
    est = wts @ x
    post = gmm.condition(A, y, sigma_y)
    m, C = np.asarray(post.mean()), np.asarray(post.covariance())
    ess = 1.0 / np.sum(wts**2)
    np.testing.assert_array_less(np.abs(est - m), Z * np.sqrt(np.diag(C) / ess))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "ve", "ou"])
def test_posterior_given_xt_and_tweedie(name, gmm):
    """The oracle's p(x0 | x_t) equals Bayes' rule in numpy; its mean and covariance equal
    Tweedie's formula applied to the exact score and its Jacobian."""
    sde = SDES[name]()
    w, mu, cov = (np.asarray(a) for a in (gmm.weights, gmm.means, gmm.covs))
    x_t = np.random.default_rng(3).normal(size=(4, 2))
    t = np.array([0.05, 0.3, 0.6, 0.9]) * sde.T
    alpha, sigma = (np.asarray(a) for a in sde.marginal_coeffs(jnp.asarray(t)))
    post = gmm.posterior(sde, jnp.asarray(x_t), jnp.asarray(t))
    mean_tw, cov_tw = parameterization.posterior_moments(gmm.score_fn(sde), sde,
                                                         jnp.asarray(x_t), jnp.asarray(t))
    for b in range(4):
        ref = np_posterior(w, mu, cov, alpha[b] * np.eye(2), x_t[b], sigma[b])
        chex.assert_trees_all_close((post.weights[b], post.means[b], post.covs[b]), ref,
                                    rtol=1e-8, atol=1e-11)
        m, C = mixture_moments(*ref)
        np.testing.assert_allclose(mean_tw[b], m, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cov_tw[b], C, rtol=1e-7, atol=1e-10)


@pytest.mark.slow
def test_tweedie_small_sigma_gaussian_approximation(gmm):
    """y = x + sigma z: the posterior of x approaches N(y + sigma^2 grad log p(y), sigma^2 I).

    Expanding log p around y gives covariance sigma^2 (I + sigma^2 H + O(sigma^4)) and mean
    y + sigma^2 g + O(sigma^4), so the relative covariance error shrinks as sigma^2 and the mean
    error as sigma^4; the fitted slopes are checked against 2 and 4.
    """
    y = np.array([[1.0, 0.2]])
    sigmas = np.array([0.08, 0.04, 0.02, 0.01])
    grad = np.asarray(gmm.score(jnp.asarray(y)))[0]
    cov_err, mean_err = [], []
    for s in sigmas:
        post = gmm.condition(np.eye(2), y[0], s)
        m, C = np.asarray(post.mean()), np.asarray(post.covariance())
        mean_err.append(np.linalg.norm(m - (y[0] + s**2 * grad)))
        cov_err.append(np.linalg.norm(C / s**2 - np.eye(2)))
    cov_slope = np.polyfit(np.log(sigmas), np.log(cov_err), 1)[0]
    mean_slope = np.polyfit(np.log(sigmas), np.log(mean_err), 1)[0]
    msg = (f"relative covariance error {cov_err} (slope {cov_slope:.2f}, expected 2); mean error "
           f"{mean_err} (slope {mean_slope:.2f}, expected 4) at sigma={sigmas.tolist()}")
    print(msg)
    assert np.all(np.diff(cov_err) < 0) and np.all(np.diff(mean_err) < 0), msg
    assert 1.8 < cov_slope < 2.2 and 3.6 < mean_slope < 4.4, msg


def test_parameterization_round_trips_and_tweedie_identities():
    """Each parameterization's to_eps and from_eps invert each other, for VP and VE coefficients;
    v = alpha eps - sigma x0 as in Salimans & Ho; the score of eps is -eps / sigma."""
    rng = np.random.default_rng(4)
    x0, eps = rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 2, 2))
    for alpha, sigma in ((np.array([0.9, 0.5, 0.1]), np.sqrt(1 - np.array([0.9, 0.5, 0.1]) ** 2)),
                         (np.ones(3), np.array([0.01, 1.0, 50.0]))):
        a, s = alpha[:, None, None], sigma[:, None, None]
        x_t = a * x0 + s * eps
        truth = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}
        for name, value in truth.items():
            p = parameterization.get_parameterization(name)
            np.testing.assert_allclose(p.to_eps(value, x_t, alpha, sigma), eps, rtol=1e-9,
                                       atol=1e-9)
            np.testing.assert_allclose(p.from_eps(eps, x_t, alpha, sigma), value, rtol=1e-9,
                                       atol=1e-9)
            np.testing.assert_allclose(p.to_x0(value, x_t, alpha, sigma), x0, rtol=1e-7,
                                       atol=1e-7)
            np.testing.assert_allclose(p.to_score(value, x_t, alpha, sigma), -eps / s,
                                       rtol=1e-9)
    with pytest.raises(ValueError, match="parameterization must be one of"):
        parameterization.get_parameterization("epsilon")


def test_constructors():
    pair = sde_lib.gaussian_pair(jax.random.PRNGKey(0), 16)
    chex.assert_shape((pair.weights, pair.means, pair.covs), ((2,), (2, 16), (2, 16, 16)))
    np.testing.assert_allclose(pair.covs[0], pair.covs[1])
    np.testing.assert_allclose(pair.weights, [0.5, 0.5])
    assert not np.allclose(pair.means[0], pair.means[1])
    ring = sde_lib.ring_of_gaussians(8, radius=2.0)
    np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 2.0, rtol=1e-12)
    np.testing.assert_allclose(ring.mean(), 0.0, atol=1e-12)
    grid = sde_lib.grid_of_gaussians(3, spacing=2.0)
    assert grid.num_components == 9 and grid.dim == 2
    aniso = sde_lib.anisotropic_mixture_2d()
    for k, (eig, angle) in enumerate((((0.5, 0.005), 30.0), ((0.1, 0.02), -60.0),
                                      ((0.03, 0.001), 0.0))):
        lam, vec = np.linalg.eigh(np.asarray(aniso.covs[k], np.float64))
        np.testing.assert_allclose(lam, sorted(eig), rtol=1e-9)
        major = vec[:, 1] * np.sign(vec[0, 1])  # the long axis, at the stated angle
        np.testing.assert_allclose(major, [math.cos(math.radians(angle)),
                                           math.sin(math.radians(angle))], atol=1e-9)
    np.testing.assert_allclose(aniso.weights, [0.5, 0.3, 0.2])


def test_responsibilities(gmm):
    """``p(k | x)`` against the scipy component densities; rows sum to one."""
    x = np.asarray(gmm.sample(jax.random.PRNGKey(3), 50), np.float64)
    w, mu, cov = (np.asarray(a, np.float64) for a in (gmm.weights, gmm.means, gmm.covs))
    logc = np.stack([np.log(w[k]) + scipy.stats.multivariate_normal(mu[k], cov[k]).logpdf(x)
                     for k in range(3)], -1)
    want = np.exp(logc - scipy.special.logsumexp(logc, -1, keepdims=True))
    np.testing.assert_allclose(gmm.responsibilities(x), want, rtol=1e-5, atol=1e-7)
