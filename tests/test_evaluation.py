"""Exact Gaussian laws of the samplers (``sde_lib.evaluation``): against a million samples of the
real sampler, at each sampler's convergence order, and the KL / W2 closed forms against an
independent numpy/scipy transcription with full covariance matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

import sde_lib
from sde_lib import evaluation
from tests._sde_cases import Z

MEAN = jnp.array([0.7, -1.2, 0.0])
VAR = jnp.array([0.25, 1.0, 0.04])
DATA = evaluation.GaussianLaw(MEAN, VAR)

CASES = [
    (sde_lib.VPSDE(), "euler_maruyama", {}),
    (sde_lib.VPSDE(), "reverse_diffusion", {}),
    (sde_lib.VPSDE(), "ddpm_ancestral", {}),
    (sde_lib.VPSDE(), "ddpm_ancestral", {"variance": "beta"}),
    (sde_lib.VPSDE(), "ddim", {}),
    (sde_lib.VPSDE(), "ddim", {"eta": 1.0}),
    (sde_lib.VPSDE(), "pf_ode_euler", {}),
    (sde_lib.VPSDE(), "pf_ode_heun", {}),
    (sde_lib.VESDE(), "euler_maruyama", {}),
    (sde_lib.VESDE(), "ddpm_ancestral", {"variance": "beta"}),
    (sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=1000), "ddpm_ancestral", {}),
    (sde_lib.subVPSDE(), "ddim", {"eta": 0.5}),
]


@pytest.mark.slow
@pytest.mark.parametrize("sde,method,options", CASES,
                         ids=[f"{type(s).__name__}-{m}-{o}" for s, m, o in CASES])
def test_law_is_the_samplers_law(sde, method, options):
    """A million samples of ``sde_lib.sample`` (30 steps, exact score) have the law's mean and
    variance in every coordinate within Z standard errors."""
    n, K = 1_000_000, 30
    law = evaluation.gaussian_sampler_law(sde, MEAN, VAR, method, K, **options)
    score_fn = evaluation.gaussian_score_fn(sde, MEAN, VAR)
    x, _ = jax.jit(lambda k: sde_lib.sample(k, sde, score_fn, (n, 3), method=method,
                                            num_steps=K, **options))(jax.random.key(7))
    x = np.asarray(x)
    z_mean = (x.mean(0) - law.mean) / np.sqrt(law.var / n)
    z_var = (x.var(0, ddof=1) - law.var) / (law.var * np.sqrt(2 / (n - 1)))
    assert np.all(np.abs(z_mean) < Z) and np.all(np.abs(z_var) < Z), (z_mean, z_var)
    # and the sampler is not exact at 30 steps, so the check has power: the law is not the data
    assert float(evaluation.gaussian_kl(law, DATA)) > 1e-4


def test_law_of_one_sampler_against_monte_carlo_fast():
    """The fast tier's version: DDPM ancestral sampling on the chain SDE, 10 steps, 2e5 samples."""
    sde, n = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=1000), 200_000
    law = evaluation.gaussian_sampler_law(sde, MEAN, VAR, "ddpm_ancestral", 10)
    x, _ = jax.jit(lambda k: sde_lib.sample(
        k, sde, evaluation.gaussian_score_fn(sde, MEAN, VAR), (n, 3), method="ddpm_ancestral",
        num_steps=10))(jax.random.key(3))
    x = np.asarray(x)
    np.testing.assert_array_less(np.abs(x.mean(0) - law.mean), Z * np.sqrt(law.var / n))
    np.testing.assert_array_less(np.abs(x.var(0) - law.var), Z * law.var * np.sqrt(2 / n))


RATES = [("euler_maruyama", {}, 1), ("ddpm_ancestral", {"chain": False}, 1),
         ("ddpm_ancestral", {"chain": False, "variance": "beta"}, 1),
         ("ddim", {"chain": False}, 1), ("pf_ode_euler", {}, 1), ("pf_ode_heun", {}, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("method,options,order", RATES,
                         ids=[f"{m}-{o}" for m, o, _ in RATES])
def test_law_converges_at_the_samplers_order(method, options, order):
    """W2 between the K-step law and the 2560-step law falls as K^-order (fitted over K = 40 ..
    320 within 0.15), and the KL to the data falls with K to the eps = 1e-3 cutoff's bias."""
    sde, Ks = sde_lib.VPSDE(), np.array([40, 80, 160, 320])
    ref = evaluation.gaussian_sampler_law(sde, MEAN, VAR, method, 2560, **options)
    laws = [evaluation.gaussian_sampler_law(sde, MEAN, VAR, method, int(K), **options)
            for K in Ks]
    errors = [float(evaluation.gaussian_w2(law, ref)) for law in laws]
    slope = np.polyfit(np.log(Ks), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.15, slope
    kl = [float(evaluation.gaussian_kl(law, DATA)) for law in laws + [ref]]
    assert all(np.diff(kl) < 0) and kl[-1] < 1e-4, kl


def _kl_full(mq, Sq, mp, Sp):
    """KL(N(mq, Sq) || N(mp, Sp)) for full covariance matrices (numpy, independent)."""
    Sp_inv = np.linalg.inv(Sp)
    d = mp - mq
    return 0.5 * (np.trace(Sp_inv @ Sq) + d @ Sp_inv @ d - len(mq)
                  + np.log(np.linalg.det(Sp) / np.linalg.det(Sq)))


def _w2_full(mq, Sq, mp, Sp):
    """W2 of Gaussians with full covariances (Dowson & Landau 1982), with scipy's sqrtm."""
    root = linalg.sqrtm(Sp)
    cross = np.real(linalg.sqrtm(root @ Sq @ root))
    return np.sqrt(np.sum((mq - mp) ** 2) + np.trace(Sq + Sp - 2 * cross))


def test_kl_and_w2_closed_forms():
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = evaluation.GaussianLaw(jnp.asarray(rng.normal(size=4)),
                                   jnp.asarray(rng.uniform(0.1, 3.0, 4)))
        p = evaluation.GaussianLaw(jnp.asarray(rng.normal(size=4)),
                                   jnp.asarray(rng.uniform(0.1, 3.0, 4)))
        args = (np.asarray(q.mean), np.diag(np.asarray(q.var)), np.asarray(p.mean),
                np.diag(np.asarray(p.var)))
        np.testing.assert_allclose(float(evaluation.gaussian_kl(q, p)), _kl_full(*args),
                                   rtol=1e-10)
        np.testing.assert_allclose(float(evaluation.gaussian_w2(q, p)), _w2_full(*args),
                                   rtol=1e-8)
    assert float(evaluation.gaussian_kl(q, q)) == 0.0 and float(evaluation.gaussian_w2(q, q)) == 0


def test_score_is_the_oracles():
    """``gaussian_score_fn`` is the Gaussian-mixture oracle's score for one component."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.GaussianMixture(np.ones(1), np.asarray(MEAN)[None],
                                  np.diag(np.asarray(VAR))[None])
    x = jax.random.normal(jax.random.key(0), (6, 3))
    t = jnp.linspace(0.01, 1.0, 6)
    np.testing.assert_allclose(evaluation.gaussian_score_fn(sde, MEAN, VAR)(x, t),
                               gmm.score_fn(sde)(x, t), rtol=1e-10)


@pytest.mark.parametrize("method,options,message", [
    ("pc", {}, "must be an affine fixed-step sampler"),
    ("pf_ode_adaptive", {}, "must be an affine fixed-step sampler"),
    ("ddim", {"clip_denoised": True}, "clip_denoised makes the step nonlinear"),
    ("ddim", {"eta": -1.0}, "eta must be"),
    ("heun", {}, "method must be one of"),
])
def test_bad_input(method, options, message):
    with pytest.raises(ValueError, match=message):
        evaluation.gaussian_sampler_law(sde_lib.VPSDE(), MEAN, VAR, method, 10, **options)
    with pytest.raises(ValueError, match="mean must be a vector"):
        evaluation.gaussian_sampler_law(sde_lib.VPSDE(), MEAN[None], VAR, "ddim", 10)
    with pytest.raises(ValueError, match="var must be positive"):
        evaluation.gaussian_sampler_law(sde_lib.VPSDE(), MEAN, -VAR, "ddim", 10)


# ----- deterministic samplers: output density by change of variables ----------------------------

def _gaussian_log_prob(x):
    mean, var = MEAN[None], VAR[None]
    return jnp.sum(-0.5 * (x - mean) ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var), -1)


@pytest.mark.parametrize("method", ["pf_ode_euler", "pf_ode_heun", "ddim"])
def test_flow_kl_is_the_exact_gaussian_kl(method):
    """On Gaussian data the Monte Carlo KL from the change of variables (20,000 prior draws)
    is the exact KL of the propagated law within Z standard errors (10 steps, where it is
    0.04-0.46 nats)."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, MEAN, VAR)
    kl, se = evaluation.flow_kl(jax.random.key(0), sde, score_fn, _gaussian_log_prob, 20_000, 3,
                                method, 10)
    law = evaluation.gaussian_sampler_law(sde, MEAN, VAR, method, 10)
    exact = float(evaluation.gaussian_kl(law, DATA))
    assert exact > 0.03 and abs(kl - exact) < Z * se, (kl, se, exact)


def test_flow_density_integrates_to_one_in_one_dimension():
    """d = 1, a two-component mixture: q(x_0) on the image of a fine grid of prior draws
    integrates to one by the trapezoidal rule, whose O(h^2) error falls 16-fold from 4,001 to
    16,001 grid points (the map is monotone; tails beyond 8 sd are below 1e-14)."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.GaussianMixture(np.array([0.3, 0.7]), np.array([[-1.5], [1.0]]),
                                  np.array([[[0.1]], [[0.3]]]))
    errors = []
    for n in (4001, 16001):
        x_T = jnp.linspace(-8.0, 8.0, n)[:, None]
        x0, log_q = evaluation.flow_log_density(sde, gmm.score_fn(sde), x_T, "pf_ode_heun", 50)
        x0, q = np.asarray(x0[:, 0]), np.exp(np.asarray(log_q))
        assert np.all(np.diff(x0) > 0)
        errors.append(abs(np.trapezoid(q, x0) - 1.0))
    assert errors[1] < 2e-5 and errors[1] < errors[0] / 10, errors


def test_flow_log_det_against_finite_differences():
    """d = 2: log |det D Phi| from forward-mode autodiff equals that of a central-difference
    Jacobian of the sampler map (float64, step 1e-5)."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    score_fn = gmm.score_fn(sde)
    x_T = jax.random.normal(jax.random.key(1), (4, 2))
    _, log_q = evaluation.flow_log_density(sde, score_fn, x_T, "ddim", 20)
    phi = jax.jit(evaluation.sampler_map(sde, score_fn, "ddim", 20))
    h = 1e-5
    for b in range(4):
        cols = [(np.asarray(phi(x_T[b:b + 1] + h * e[None]))
                 - np.asarray(phi(x_T[b:b + 1] - h * e[None])))[0] / (2 * h) for e in np.eye(2)]
        logdet = np.log(abs(np.linalg.det(np.stack(cols, axis=1))))
        want = float(sde.prior_logp(x_T[b:b + 1])[0]) - logdet
        np.testing.assert_allclose(float(log_q[b]), want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_flow_kl_on_a_mixture_falls_with_steps():
    """With the exact score of the 2-D mixture, Heun's output KL falls with the steps to the
    eps = 1e-3 cutoff's level (below 2e-3 nats at 320 steps)."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    kls = [evaluation.flow_kl(jax.random.key(2), sde, gmm.score_fn(sde), gmm.log_prob, 4000, 2,
                              "pf_ode_heun", K) for K in (5, 20, 80, 320)]
    means = [k for k, _ in kls]
    assert all(np.diff(means) < 0) and abs(means[-1]) < 2e-3, kls


@pytest.mark.parametrize("method,options", [("euler_maruyama", {}), ("ddim", {"eta": 0.5}),
                                            ("pf_ode_adaptive", {})])
def test_flow_needs_a_deterministic_sampler(method, options):
    with pytest.raises(ValueError, match="must be a deterministic fixed-step sampler"):
        evaluation.sampler_map(sde_lib.VPSDE(), lambda x, t: -x, method, 10, **options)
    with pytest.raises(ValueError, match=r"x_T must be \(B, d\)"):
        evaluation.flow_log_density(sde_lib.VPSDE(), lambda x, t: -x, jnp.zeros((2, 2, 2)),
                                    "ddim", 10)


def test_flow_kl_interval_is_calibrated():
    """The flow KL's +-1.96 standard-error interval covers the exact KL at its nominal 95% rate:
    over 1000 independent estimates of 300 prior draws each, the coverage lies within 4.5
    binomial standard errors (0.031) of 0.95, so too wide an interval fails as well."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, MEAN, VAR)
    exact = float(evaluation.gaussian_kl(
        evaluation.gaussian_sampler_law(sde, MEAN, VAR, "pf_ode_euler", 10), DATA))

    estimate = jax.jit(lambda key: evaluation.flow_kl(key, sde, score_fn, _gaussian_log_prob,
                                                      300, 3, "pf_ode_euler", 10))

    kl, se = jax.vmap(estimate)(jax.random.split(jax.random.key(11), 1000))
    coverage = float(jnp.mean(jnp.abs(kl - exact) < 1.96 * se))
    assert abs(coverage - 0.95) < Z * np.sqrt(0.95 * 0.05 / 1000), coverage
