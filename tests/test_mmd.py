"""``sde_lib.mixture_mmd``: the mixture's side of MMD^2 in closed form, checked against Monte
Carlo, zero in expectation for exact samples, the population value for Gaussian samples, and its
standard error against the spread of independent replicates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from sde_lib.mmd import _gaussian_kernel_mean

Z = 4.0


def gaussian(mean, cov):
    return sde_lib.GaussianMixture(np.ones(1), np.asarray(mean)[None], np.asarray(cov)[None])


def test_kernel_mean_is_the_gaussian_integral():
    """``E exp(-|z|^2 / 2h^2)``, ``z ~ N(m, S)`` (correlated S, d = 3), against the mean over
    200,000 draws, within Z standard errors, for three bandwidths."""
    rng = np.random.default_rng(0)
    m = np.array([0.3, -0.5, 0.8])
    L = rng.normal(size=(3, 3)) * 0.5
    S = L @ L.T + 0.2 * np.eye(3)
    z = rng.multivariate_normal(m, S, size=200_000)
    for h in (0.3, 1.0, 2.5):
        k = np.exp(-np.sum(z**2, 1) / (2 * h**2))
        got = float(_gaussian_kernel_mean(jnp.asarray(m)[None], jnp.asarray(S)[None], h)[0])
        assert abs(got - k.mean()) <= Z * k.std() / math.sqrt(k.size), (h, got, k.mean())


def population_mmd2(mq, Sq, mp, Sp, h):
    """MMD^2 between two Gaussians in numpy: each term a Gaussian integral of the kernel."""
    def e(m, S):
        A = np.eye(len(m)) + S / h**2
        return np.linalg.det(A) ** -0.5 * np.exp(-0.5 * m @ np.linalg.solve(S + h**2 * np.eye(
            len(m)), m))
    zero = np.zeros(len(mq))
    return e(zero, 2 * Sq) - 2 * e(mq - mp, Sq + Sp) + e(zero, 2 * Sp)


def replicates(draw, target, n, reps, hs, seed=0):
    """``reps`` independent estimates (and standard errors) from ``n`` samples each, the
    samples ``draw(key, reps * n)`` split into ``reps`` sets."""
    x = np.asarray(draw(jax.random.PRNGKey(seed), reps * n)).reshape(reps, n, -1)
    out = [sde_lib.mixture_mmd(xr, target, hs) for xr in x]
    return (np.array([o.mmd2 for o in out]), np.array([o.se for o in out]))


def test_zero_in_expectation_for_exact_samples():
    """Samples of the (correlated, asymmetric) 2-D mixture itself: the mean of 200 independent
    estimates (n = 100 each) is 0 within Z standard errors of that mean, for each bandwidth;
    the jackknife standard error is not below the estimates' actual spread (it is conservative
    here, where the estimate's variance is of order 1 / n^2), nor 3x above it."""
    gmm = sde_lib.asymmetric_mixture_2d()
    hs = (0.3, 1.0)
    est, se = replicates(lambda k, n: gmm.sample(k, n), gmm, 100, 200, hs)
    sd = est.std(0, ddof=1)
    assert np.all(np.abs(est.mean(0)) <= Z * sd / math.sqrt(len(est))), (est.mean(0), sd)
    assert np.all(se.mean(0) >= 0.9 * sd) and np.all(se.mean(0) <= 3 * sd), (se.mean(0), sd)


def test_gaussian_samples_give_the_population_value():
    """Samples of ``q = N(mq, Sq)`` against ``p = N(mp, Sp)`` in d = 3: the mean of 100
    estimates (n = 200 each) equals the population MMD^2 (numpy closed form) within Z standard
    errors, and the jackknife standard error matches the estimates' spread within 25%."""
    mq, Sq = np.array([0.4, 0.0, -0.2]), np.diag([1.0, 0.5, 1.5])
    mp, Sp = np.zeros(3), np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]])
    hs = (0.5, 1.0, 2.0)
    chol = np.linalg.cholesky(Sq)
    est, se = replicates(lambda k, n: mq[None] + jax.random.normal(k, (n, 3)) @ chol.T,
                         gaussian(mp, Sp), 200, 100, hs)
    want = np.array([population_mmd2(mq, Sq, mp, Sp, h) for h in hs])
    sd = est.std(0, ddof=1)
    assert np.all(want > 5 * sd / math.sqrt(len(est)))  # the check can tell q from p
    assert np.all(np.abs(est.mean(0) - want) <= Z * sd / math.sqrt(len(est))), (est.mean(0), want)
    assert np.all(np.abs(se.mean(0) / sd - 1) <= 0.25), (se.mean(0), sd)


@pytest.mark.parametrize("x, hs, match", [
    (np.zeros((10, 3)), (1.0,), r"x must be \(n, d\) with n >= 3 samples and d = 2"),
    (np.zeros((2, 2)), (1.0,), "n >= 3"),
    (np.zeros((10, 2)), (1.0, 0.0), "bandwidths must be positive"),
])
def test_bad_input(x, hs, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.mixture_mmd(x, sde_lib.asymmetric_mixture_2d(), hs)
