"""Exact Gaussian laws of the samplers (``sde_lib.evaluation``): against a million samples of the
real sampler, at each sampler's convergence order, and the KL / W2 closed forms against an
independent numpy/scipy transcription with full covariance matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

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
@pytest.mark.optimized  # a million samples of each sampler: XLA's optimisations pay
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_flow_density_integrates_to_one_in_two_dimensions():
    """d = 2, the asymmetric mixture: q(x_0) integrates to one over the image of a grid of prior
    draws on [-6, 6]^2, each cell's area from its four mapped corners (shoelace formula, no
    Jacobian), the corners' mean density times that area. The map stretches steeply between the
    modes, so the error falls only about 2.5-fold per halving of the grid step (0.12, 0.05, 0.02
    at 81^2, 161^2, 321^2 points, towards 1; the prior's mass outside the square is 2e-9);
    a wrong log-determinant (by a constant c) would leave an error of ``e^c - 1``."""
    sde = sde_lib.VPSDE()
    gmm = sde_lib.asymmetric_mixture_2d()
    density = jax.jit(lambda x: evaluation.flow_log_density(
        sde, gmm.score_fn(sde), x, "pf_ode_heun", 30))
    errors = []
    for n in (81, 161, 321):
        u = np.linspace(-6.0, 6.0, n)
        x0, log_q = density(jnp.asarray(np.stack(np.meshgrid(u, u, indexing="ij"), -1)
                                        .reshape(-1, 2)))
        p = np.asarray(x0, np.float64).reshape(n, n, 2)
        q = np.exp(np.asarray(log_q, np.float64)).reshape(n, n)
        corners = [p[:-1, :-1], p[1:, :-1], p[1:, 1:], p[:-1, 1:]]
        area = 0.5 * sum(a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]
                         for a, b in zip(corners, corners[1:] + corners[:1], strict=True))
        assert np.all(area > 0)  # the map keeps its orientation: no cell folds over
        q_cell = 0.25 * (q[:-1, :-1] + q[1:, :-1] + q[1:, 1:] + q[:-1, 1:])
        errors.append(abs(np.sum(q_cell * area) - 1.0))
    assert errors[0] > 2 * errors[1] > 4 * errors[2] and errors[2] < 0.025, errors


@pytest.mark.slow
def test_flow_density_converges_to_the_exact_flows():
    """Gaussian data, where the probability-flow ODE is solved in closed form: its map from
    ``T`` to 0 is ``x_0 = mu + c (x_T - alpha_T mu)``, ``c = s / sqrt(alpha_T^2 s^2 + sigma_T^2)``
    per coordinate, so the output density is ``N(mu (1 - c alpha_T), c^2)`` (scipy). Heun's
    discrete-map log-density approaches it at order 2: the largest error over 200 draws falls
    more than 10-fold per 4-fold steps, to below 1e-3 nats at 640 steps."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, MEAN, VAR)
    x_T = jax.random.normal(jax.random.key(0), (200, 3))
    alpha_T, sigma_T = (float(v) for v in sde.marginal_coeffs(jnp.array(sde.T)))
    mean, var = np.asarray(MEAN, np.float64), np.asarray(VAR, np.float64)
    c = np.sqrt(var / (alpha_T**2 * var + sigma_T**2))
    errors = []
    for K in (40, 160, 640):
        x0, log_q = evaluation.flow_log_density(sde, score_fn, x_T, "pf_ode_heun", K)
        want = stats.norm.logpdf(np.asarray(x0, np.float64), mean * (1 - c * alpha_T),
                                 c * sde.prior_std).sum(1)
        errors.append(np.max(np.abs(np.asarray(log_q, np.float64) - want)))
    assert errors[0] > 10 * errors[1] > 100 * errors[2] and errors[2] < 1e-3, errors


# ----- SDE samplers: the Brownian path and the pathwise error ------------------------------------

def test_brownian_normals_are_one_brownian_path():
    """The step normals of a grid that is not nested in the fine grid (two of its times inside one
    fine interval) are independent standard normals, and their covariance with the fine grid's
    is that of the Brownian increments, ``overlap / sqrt(h_k h_j)`` (computed here from the
    intervals); 20,000 paths, within Z standard errors (``1 / sqrt(n)`` per entry)."""
    n = 20_000
    fine = np.linspace(1.0, 0.0, 8)
    coarse = np.array([1.0, 0.8, 0.45, 0.44, 0.1, 0.0])
    fine_z, z = evaluation.brownian_normals(jax.random.key(0), fine, coarse, (n,))
    fine_z, z = np.asarray(fine_z, np.float64), np.asarray(z, np.float64)
    np.testing.assert_array_less(np.abs(z.mean(1)), Z / np.sqrt(n))
    np.testing.assert_array_less(np.abs(z @ z.T / n - np.eye(5)), Z / np.sqrt(n))
    overlap = np.array([[max(0.0, min(a0, b0) - max(a1, b1))
                         for b0, b1 in zip(fine[:-1], fine[1:], strict=True)]
                        for a0, a1 in zip(coarse[:-1], coarse[1:], strict=True)])
    want = overlap / np.sqrt(np.outer(-np.diff(coarse), -np.diff(fine)))
    np.testing.assert_array_less(np.abs(z @ fine_z.T / n - want), Z / np.sqrt(n))
    assert want.max() > 0.5  # the coupling is strong where the grids share intervals


@pytest.mark.slow
def test_coupled_error_is_zero_against_itself_and_falls():
    """The reference run against itself (same steps, the same path) is zero to round-off;
    ancestral sampling's pathwise error falls with the steps."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, MEAN, VAR)
    rms, se, ref = evaluation.coupled_error(jax.random.key(0), sde, score_fn, (1000, 3),
                                            "ddpm_ancestral", (10, 40, 200), 200)
    assert ref.shape == (1000, 3) and float(rms[-1]) < 1e-5 and float(se[-1]) < 1e-5
    assert float(rms[0]) > float(rms[1]) > 100 * float(rms[2]), rms


@pytest.mark.slow
@pytest.mark.parametrize("method,options,steps,order", [
    ("euler_maruyama", {}, (20, 40, 80, 160), 1.0),
    ("pf_ode_heun", {}, (10, 20, 40, 80), 2.0),
])
def test_coupled_error_falls_at_the_strong_order(method, options, steps, order):
    """Pathwise error against 2,560 steps on the same Brownian path (Gaussian data in d = 1,
    exact score): the fitted log-log slope is the sampler's strong order within 0.15 (1 for
    Euler-Maruyama, the noise being additive; 2 for Heun's ODE)."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, jnp.array([0.7]), jnp.array([0.25]))
    rms, _, _ = evaluation.coupled_error(jax.random.key(0), sde, score_fn, (2000, 1), method,
                                         steps, 2560, **options)
    slope = np.polyfit(np.log(steps), np.log(np.asarray(rms)), 1)[0]
    assert abs(slope + order) < 0.15, (np.asarray(rms), slope)


@pytest.mark.slow
def test_coupled_error_of_ancestral_sampling_approaches_order_one():
    """Ancestral sampling (variance beta_tilde, off the chain to reach 2,560 reference steps)
    is of strong order 1 only asymptotically (its noise deviates from ``g sqrt(h)`` where
    ``sigma_t^2`` is comparable to the step, near ``t = 0``): the local slope rises towards 1
    and is within 0.15 of it from 160 to 320 steps."""
    sde = sde_lib.VPSDE()
    score_fn = evaluation.gaussian_score_fn(sde, jnp.array([0.7]), jnp.array([0.25]))
    steps = (40, 80, 160, 320)
    rms, _, _ = evaluation.coupled_error(jax.random.key(0), sde, score_fn, (2000, 1),
                                         "ddpm_ancestral", steps, 2560, chain=False)
    local = -np.diff(np.log(np.asarray(rms))) / np.log(2)
    assert np.all(np.diff(local) > 0) and abs(local[-1] - 1.0) < 0.15, local


def test_coupled_error_bad_input():
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="draws one normal per step"):
        evaluation.coupled_error(jax.random.key(0), sde, lambda x, t: -x, (4, 1), "pc", (4,), 8)
    with pytest.raises(ValueError, match="ref_steps"):
        evaluation.coupled_error(jax.random.key(0), sde, lambda x, t: -x, (4, 1),
                                 "euler_maruyama", (4,), 0)
    with pytest.raises(ValueError, match="times must lie within"):
        evaluation.brownian_normals(jax.random.key(0), [0.5, 0.0], [1.0, 0.0], (2,))
    with pytest.raises(ValueError, match="strictly decreasing"):
        evaluation.brownian_normals(jax.random.key(0), [0.0, 1.0], [1.0, 0.0], (2,))


# ----- per-mode errors and the MMD test --------------------------------------------------------

@pytest.mark.slow
def test_mode_errors_of_exact_samples():
    """Exact samples of the overlapping 3-component mixture: every weight error within Z of its
    standard error, and the mean and covariance errors at their floor (below Z bootstrap
    standard errors). Shifted and reweighted samples are caught."""
    gmm = sde_lib.asymmetric_mixture_2d()
    errors = jax.jit(lambda k, x: evaluation.mode_errors(k, gmm, x))
    x = gmm.sample(jax.random.key(1), 4000)
    e = errors(jax.random.key(2), x)
    np.testing.assert_array_less(np.abs(e.weight), Z * e.weight_se)
    np.testing.assert_array_less(e.mean, Z * e.mean_se)
    np.testing.assert_array_less(e.cov, Z * e.cov_se)
    shifted = errors(jax.random.key(2), x + jnp.array([[0.3, 0.0]]))
    assert np.all(shifted.mean > 2 * Z * shifted.mean_se)
    keep = np.asarray(gmm.responsibilities(x))[:, 1] < 0.5  # drops most of component 1
    fewer = errors(jax.random.key(2), x[np.flatnonzero(keep | (np.arange(4000) % 2 == 0))])
    assert float(fewer.weight[1]) < -Z * float(fewer.weight_se[1])


@pytest.mark.slow
def test_mode_error_intervals_are_calibrated():
    """Separated modes (a ring of 4, std 0.1), 200 replicates of 500 samples: the weight's
    standard error is the binomial one and matches the replicates' sd of exact samples' weights
    within 25%; the bootstrap standard errors of the mean and covariance errors match their
    replicates' sd within 25% for samples scaled by 1.05 with noise of sd 0.1 added (errors of
    0.1 and 1, far above the floor);
    at the floor, exact samples, they are conservative (never more than 25% below the sd: the
    norm of a small error is not a smooth statistic)."""
    gmm = sde_lib.ring_of_gaussians(num_components=4, radius=2.0, std=0.1)
    n = 500
    def wrong(k, scale):  # scaled, and noise of the components' sd added when scale != 1
        noise = (scale - 1.0) * 2.0 * jax.random.normal(jax.random.fold_in(k, 2), (n, 2))
        return scale * gmm.sample(k, n) + noise

    errors = jax.jit(jax.vmap(lambda k, scale: evaluation.mode_errors(
        jax.random.fold_in(k, 1), gmm, wrong(k, scale), num_bootstrap=100), (0, None)))
    keys = jax.random.split(jax.random.key(3), 200)

    def ratio(value, se):
        return np.std(np.asarray(value), 0, ddof=1) / np.mean(np.asarray(se), 0)

    exact, scaled = errors(keys, 1.0), errors(keys, 1.05)
    binomial = np.sqrt((exact.weight + 0.25) * (0.75 - exact.weight) / (n - 1))
    np.testing.assert_allclose(exact.weight_se, binomial, rtol=1e-3)
    np.testing.assert_array_less(np.abs(ratio(exact.weight, exact.weight_se) - 1.0), 0.25)
    assert np.all(np.mean(scaled.mean, 0) > 5 * np.mean(exact.mean, 0))
    assert np.all(np.mean(scaled.cov, 0) > 5 * np.mean(exact.cov, 0))
    for value, se in ((scaled.mean, scaled.mean_se), (scaled.cov, scaled.cov_se)):
        np.testing.assert_array_less(np.abs(ratio(value, se) - 1.0), 0.25)
    for value, se in ((exact.mean, exact.mean_se), (exact.cov, exact.cov_se)):
        np.testing.assert_array_less(ratio(value, se), 1.25)


@pytest.mark.slow
def test_mmd_test_level_and_power():
    """Under the null (two exact sample sets of 100) ``p <= 0.05`` in 5% of 1000 replicates,
    within Z binomial standard errors; noise of sd 1 added to one set of 200 is rejected in at
    least 18 of 20 replicates."""
    gmm = sde_lib.asymmetric_mixture_2d()

    def p_value(key, n, noise):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        y = gmm.sample(k2, n) + noise * jax.random.normal(k4, (n, 2))
        return evaluation.mmd_test(k3, gmm.sample(k1, n), y, num_permutations=99)[1]

    p = jax.jit(jax.vmap(lambda k: p_value(k, 100, 0.0)))(
        jax.random.split(jax.random.key(4), 1000))
    level = float(jnp.mean(p <= 0.05))
    assert abs(level - 0.05) < Z * np.sqrt(0.05 * 0.95 / 1000), level
    p = jax.jit(jax.vmap(lambda k: p_value(k, 200, 1.0)))(
        jax.random.split(jax.random.key(5), 20))
    assert int(jnp.sum(p <= 0.05)) >= 18, p


def test_mmd_test_bad_input():
    x = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match=r"x and y must be \(n, d\) and \(m, d\)"):
        evaluation.mmd_test(jax.random.key(0), x, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="num_permutations must be >= 1"):
        evaluation.mmd_test(jax.random.key(0), x, x, num_permutations=0)


def _numpy_prior_kl(sde_name, mean, var):
    """KL(prior || p_T) in closed form for Gaussian data, from the SDEs' formulas in numpy:
    VP (beta 0.1 -> 5, T = 1) ``log alpha_T = -(beta_1 - beta_0) / 4 - beta_0 / 2``, prior
    N(0, 1); VE (sigma 0.01 -> 5) ``p_T = N(mu, s^2 + sigma_min^2 ((sigma_max / sigma_min)^2
    - 1))``, prior N(0, sigma_max^2)."""
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    if sde_name == "vp":
        alpha = np.exp(-(5.0 - 0.1) / 4 - 0.1 / 2)
        m, v, p = alpha * mean, alpha**2 * var + 1 - alpha**2, 1.0
    else:
        m, v, p = mean, var + 0.01**2 * ((5.0 / 0.01) ** 2 - 1), 5.0**2
    return 0.5 * np.sum(p / v + m**2 / v - 1 + np.log(v / p))


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_flow_limit_kl_is_the_prior_mismatch(sde_name):
    """``flow_limit_kl`` on Gaussian data: its Monte Carlo estimate (20,000 prior draws) is the
    closed-form KL(prior || p_T) within Z standard errors, and the exact law of Heun's
    probability-flow sampler at 1000 steps has that KL to the data within 1% (the flow preserves
    KL; the rest is the O(eps) gap between p_eps and the data), while Euler-Maruyama's at 1000
    steps is far below it (the reverse SDE contracts the prior's error)."""
    sde = (sde_lib.VPSDE(beta_min=0.1, beta_max=5.0) if sde_name == "vp"
           else sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0))
    want = _numpy_prior_kl(sde_name, MEAN, VAR)
    alpha, sigma = sde.marginal_coeffs(jnp.asarray(sde.T))
    p_T = evaluation.GaussianLaw(alpha * MEAN, alpha**2 * VAR + sigma**2)

    def log_p_T(z):
        return jnp.sum(stats.norm.logpdf(np.asarray(z), np.asarray(p_T.mean),
                                         np.sqrt(np.asarray(p_T.var))), axis=1)

    kl, se = evaluation.flow_limit_kl(jax.random.key(4), sde, log_p_T, 20_000, 3)
    assert want > 1e-3 and abs(float(kl) - want) < Z * float(se), (kl, se, want)
    heun = float(evaluation.gaussian_kl(
        evaluation.gaussian_sampler_law(sde, MEAN, VAR, "pf_ode_heun", 1000), DATA))
    em = float(evaluation.gaussian_kl(
        evaluation.gaussian_sampler_law(sde, MEAN, VAR, "euler_maruyama", 1000), DATA))
    assert abs(heun - want) < 0.01 * want and em < want / 5, (heun, em, want)


@pytest.mark.slow
def test_flow_kl_tends_to_the_flow_limit_on_a_mixture():
    """With the exact score of the 2-D mixture under a VP SDE whose ``p_T`` is far from the
    prior (beta_max = 5), Heun's flow KL on the same prior draws approaches ``flow_limit_kl``
    at order 2 (the per-draw difference is the discretization error alone): the gap falls more
    than 8-fold from 80 to 320 steps, to under 1e-3 of the limit."""
    sde = sde_lib.VPSDE(beta_min=0.1, beta_max=5.0)
    gmm = sde_lib.asymmetric_mixture_2d()
    limit, _ = evaluation.flow_limit_kl(jax.random.key(3), sde,
                                        gmm.marginal(sde, sde.T).log_prob, 4000, 2)
    gaps = [abs(float(evaluation.flow_kl(jax.random.key(3), sde, gmm.score_fn(sde),
                                         gmm.log_prob, 4000, 2, "pf_ode_heun", K)[0] - limit))
            for K in (80, 320)]
    assert float(limit) > 5e-3 and gaps[1] < gaps[0] / 8 and gaps[1] < 1e-3 * float(limit), (
        limit, gaps)
