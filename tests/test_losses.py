"""Score-matching losses: closed forms in numpy, identities, unbiasedness, recovery of the score.

References are written here independently of sde_lib: the SDE coefficients, the parameterization
conversions and the weights are re-derived in numpy from the papers' formulas.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.integrate
from _sde_cases import SDES, Z

import sde_lib
from sde_lib import losses

PARAMS = ("eps", "score", "x0", "v")
EPS = 1e-5


# ---------------------------------------------------------------- numpy references of the SDEs
def vp_np(t, bmin=0.1, bmax=20.0):
    B = bmin * t + 0.5 * t**2 * (bmax - bmin)
    return np.exp(-0.5 * B), np.sqrt(-np.expm1(-B)), bmin + t * (bmax - bmin)


def subvp_np(t, bmin=0.1, bmax=20.0):
    B = bmin * t + 0.5 * t**2 * (bmax - bmin)
    return np.exp(-0.5 * B), -np.expm1(-B), (bmin + t * (bmax - bmin)) * -np.expm1(-2 * B)


def ve_np(t, smin=0.01, smax=50.0):
    s = smin * (smax / smin) ** t
    return np.ones_like(t), np.sqrt(s**2 - smin**2), s**2 * 2 * np.log(smax / smin)


def brownian_np(t, s=1.3):
    return np.ones_like(t), s * np.sqrt(t), np.full_like(t, s**2)


NP_SDES = {"vp": vp_np, "subvp": subvp_np, "ve": ve_np, "bm": brownian_np}


def np_to_score(out, x_t, a, s, param):
    """Score implied by a network output, from the definitions (not sde_lib's converters)."""
    a, s = a[:, None], s[:, None]
    if param == "eps":
        return -out / s
    if param == "score":
        return out
    if param == "x0":  # x_t = a x0 + s eps
        return -(x_t - a * out) / s**2
    eps = (s * x_t + a * out) / (a**2 + s**2)  # v = a eps - s x0
    return -eps / s


# ---------------------------------------------------------------- a fixed nonlinear network
W = np.array([[0.7, -0.3, 0.2], [0.1, 0.5, -0.4], [-0.2, 0.3, 0.6]])
C = np.array([0.1, -0.2, 0.05])


def model_jax(x, t):
    return jnp.tanh(x @ W.T) * (1.0 + t)[:, None] + C[None]


def model_np(x, t):
    return np.tanh(x @ W.T) * (1.0 + t)[:, None] + C


def fixed_inputs(B=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, d)), rng.normal(size=(B, d))


# ---------------------------------------------------------------- closed forms on fixed inputs
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("param", PARAMS)
def test_dsm_matches_numpy(sde_name, param):
    """0.5 lambda(t) ||s_theta(x_t, t) + z / sigma||^2 in score space (Song et al. 2021 Eq. 7),
    for each weighting; the library computes it in eps space. Round-off only: rtol 1e-10."""
    sde = SDES[sde_name]()
    x0, z = fixed_inputs()
    t = np.array([EPS, 0.01, 0.3, 0.7, 1.0])
    a, s, g2 = NP_SDES[sde_name](t)
    x_t = a[:, None] * x0 + s[:, None] * z
    score = np_to_score(model_np(x_t, t), x_t, a, s, param)
    sq = np.sum((score + z / s[:, None]) ** 2, axis=1)
    for name, lam in {"sigma2": s**2, "likelihood": g2, "none": np.ones_like(t)}.items():
        got = losses.dsm_loss(model_jax, x0, z, t, sde=sde,
                              parameterization=sde_lib.get_parameterization(param),
                              weighting=losses.SCORE_WEIGHTINGS[name])
        chex.assert_shape(got, (5,))
        np.testing.assert_allclose(got, 0.5 * lam * sq, rtol=1e-10, err_msg=name)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("param", PARAMS)
def test_continuous_regression_losses_match_numpy(sde_name, param):
    """Continuous eps and x0 losses, 1/2 w ||.||^2: simple (Ho et al. Eq. 14 with continuous t,
    halved as score_sde's 0.5 * sum) and ELBO weights g^2 / sigma^2, g^2 alpha^2 / sigma^4
    (Kingma et al. 2021 Eq. 17). rtol 1e-9."""
    sde = SDES[sde_name]()
    x0, z = fixed_inputs(seed=1)
    t = np.array([EPS, 0.05, 0.4, 0.9, 1.0])
    a, s, g2 = NP_SDES[sde_name](t)
    x_t = a[:, None] * x0 + s[:, None] * z
    score = np_to_score(model_np(x_t, t), x_t, a, s, param)
    eps_hat = -s[:, None] * score
    x0_hat = (x_t + s[:, None] ** 2 * score) / a[:, None]
    cases = {("eps", "simple"): 0.5 * np.sum((eps_hat - z) ** 2, 1),
             ("eps", "elbo"): g2 / (2 * s**2) * np.sum((eps_hat - z) ** 2, 1),
             ("x0", "simple"): 0.5 * np.sum((x0_hat - x0) ** 2, 1),
             ("x0", "elbo"): g2 * a**2 / (2 * s**4) * np.sum((x0_hat - x0) ** 2, 1)}
    for (target, w), want in cases.items():
        got = losses.denoising_loss(model_jax, x0, z, t, sde=sde,
                                    parameterization=sde_lib.get_parameterization(param),
                                    target=target,
                                    weighting=losses.CONTINUOUS_TARGET_WEIGHTINGS[target][w])
        np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f"{target} {w}")


def ddpm_np(N=100, bmin=0.1, bmax=20.0):
    betas = np.linspace(bmin / N, bmax / N, N)
    ab = np.cumprod(1 - betas)
    ab_prev = np.r_[1.0, ab[:-1]]
    beta_tilde = betas * (1 - ab_prev) / (1 - ab)
    sig2 = {"beta": np.r_[beta_tilde[1], betas[1:]], "beta_tilde": np.r_[beta_tilde[1],
                                                                         beta_tilde[1:]]}
    return betas, ab, ab_prev, beta_tilde, sig2


@pytest.mark.parametrize("param", PARAMS)
def test_ddpm_losses_match_numpy(param):
    """Discrete losses at i ~ {0, 1, 37, 98, 99}: simple and ELBO weights of Ho et al. Eq. 12
    (eps) and c_i^2 / (2 sigma_i^2) (x0), both reverse variances; the simple loss is
    0.5 ||.||^2 (score_sde's 0.5 * sum); model sees t_i = (i+1)/N; x_i from the chain SDE."""
    N = 100
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    chain = sde_lib.DDPMChain.from_sde(sde)
    betas, ab, ab_prev, _, sig2 = ddpm_np(N)
    x0, z = fixed_inputs(seed=2)
    i = np.array([0, 1, 37, 98, 99])
    a, s = np.sqrt(ab[i]), np.sqrt(1 - ab[i])
    x_t = a[:, None] * x0 + s[:, None] * z
    score = np_to_score(model_np(x_t, (i + 1) / N), x_t, a, s, param)
    err_eps = np.sum((-s[:, None] * score - z) ** 2, 1)
    err_x0 = np.sum(((x_t + s[:, None] ** 2 * score) / a[:, None] - x0) ** 2, 1)
    p = sde_lib.get_parameterization(param)
    for variance in ("beta", "beta_tilde"):
        v = sig2[variance][i]
        w_eps = betas[i] ** 2 / (2 * v * (1 - betas[i]) * (1 - ab[i]))
        w_x0 = (betas[i] * np.sqrt(ab_prev[i]) / (1 - ab[i])) ** 2 / (2 * v)
        for target, w, want in [("eps", "simple", 0.5 * err_eps),
                                ("eps", "elbo", w_eps * err_eps),
                                ("x0", "simple", 0.5 * err_x0), ("x0", "elbo", w_x0 * err_x0)]:
            weight = functools.partial(losses.DISCRETE_TARGET_WEIGHTINGS[target][w],
                                       variance=variance)
            got = losses.ddpm_loss(model_jax, x0, z, i, sde=sde, chain=chain,
                                   parameterization=p, target=target, weighting=weight)
            np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f"{target} {w} {variance}")


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("target", ["eps", "x0"])
def test_ddpm_elbo_loss_is_vb_term_kl(variance, target):
    """For i >= 1 the ELBO-weighted eps and x0 losses are chain.vb_term's KL L_{i-1} minus the
    model-independent constant d/2 (-1 + log sigma_i^2 - log beta_tilde_i + beta_tilde_i /
    sigma_i^2) of Ho et al. Eq. 8 (zero for beta_tilde). Same formula two ways: rtol 1e-9."""
    N = 100
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    chain = sde_lib.DDPMChain.from_sde(sde)
    _, ab, _, beta_tilde, sig2 = ddpm_np(N)
    x0, z = fixed_inputs(B=6, seed=3)
    i = np.array([1, 2, 10, 50, 98, 99])
    p = sde_lib.get_parameterization("v")
    weight = functools.partial(losses.DISCRETE_TARGET_WEIGHTINGS[target]["elbo"],
                               variance=variance)
    got = losses.ddpm_loss(model_jax, x0, z, i, sde=sde, chain=chain, parameterization=p,
                           target=target, weighting=weight)
    a, s = jnp.sqrt(ab[i]), jnp.sqrt(1 - ab[i])
    x_i = chain.q_sample(x0, i, z)
    eps_pred = p.to_eps(model_jax(x_i, jnp.asarray((i + 1) / N)), x_i, a, s)
    kl = chain.vb_term(x0, x_i, i, eps_pred, variance=variance, discretized=False)
    v = sig2[variance][i]
    const = 0.5 * 3 * (-1 + np.log(v) - np.log(beta_tilde[i]) + beta_tilde[i] / v)
    np.testing.assert_allclose(np.asarray(got) + const, kl, rtol=1e-9)


def test_seeds_identity_eps_vs_score_error():
    """||eps - eps_theta||^2 = (1 - alpha_bar_i) ||grad log q(x_i|x_0) - s_theta||^2 with
    grad log q = -(x_i - sqrt(alpha_bar) x0) / (1 - alpha_bar) and s_theta = -eps_theta /
    sqrt(1 - alpha_bar): the simple loss of an eps model and of the equivalent score model.
    Round-off only: rtol 1e-12 (the loss is half the squared error, score_sde's 0.5 * sum)."""
    N = 100
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    chain = sde_lib.DDPMChain.from_sde(sde)
    _, ab, _, _, _ = ddpm_np(N)
    x0, z = fixed_inputs(seed=4)
    i = np.array([0, 3, 40, 77, 99])
    x_i = np.sqrt(ab[i])[:, None] * x0 + np.sqrt(1 - ab[i])[:, None] * z
    eps_theta = model_np(x_i, (i + 1) / N)
    s_theta = -eps_theta / np.sqrt(1 - ab[i])[:, None]
    grad_log_q = -(x_i - np.sqrt(ab[i])[:, None] * x0) / (1 - ab[i])[:, None]
    rhs = 0.5 * (1 - ab[i]) * np.sum((grad_log_q - s_theta) ** 2, 1)
    lhs = losses.ddpm_loss(model_jax, x0, z, i, sde=sde, chain=chain,
                           parameterization=sde_lib.get_parameterization("eps"))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)

    def score_model(x, t):  # the same network, parameterized as a score
        return -model_jax(x, t) / jnp.sqrt(1 - chain.alphas_cumprod[jnp.round(t * N).astype(int)
                                                                      - 1])[:, None]
    lhs_score = losses.ddpm_loss(score_model, x0, z, i, sde=sde, chain=chain,
                                 parameterization=sde_lib.get_parameterization("score"))
    np.testing.assert_allclose(lhs_score, rhs, rtol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "cosine", "subvp", "ve", "ou", "bm"])
def test_regression_losses_equal_dsm(sde_name):
    """Continuous eps loss = DSM with sigma^2 weighting (both 0.5 * sum, score_sde); ELBO eps and
    ELBO x0 losses = DSM with likelihood weighting; for every parameterization. rtol 1e-9."""
    sde = SDES[sde_name]()
    x0, z = fixed_inputs(seed=5)
    t = np.array([EPS, 0.1, 0.5, 0.9, 1.0]) * sde.T
    for param in PARAMS:
        kw = dict(sde=sde, parameterization=sde_lib.get_parameterization(param))
        dsm_s2 = losses.dsm_loss(model_jax, x0, z, t, weighting=losses.sigma2_weighting, **kw)
        dsm_g2 = losses.dsm_loss(model_jax, x0, z, t, weighting=losses.likelihood_weighting, **kw)
        eps_simple = losses.denoising_loss(model_jax, x0, z, t, target="eps", **kw)
        eps_elbo = losses.denoising_loss(model_jax, x0, z, t, target="eps",
                                         weighting=losses.eps_elbo_weight, **kw)
        x0_elbo = losses.denoising_loss(model_jax, x0, z, t, target="x0",
                                        weighting=losses.x0_elbo_weight, **kw)
        np.testing.assert_allclose(eps_simple, dsm_s2, rtol=1e-9, err_msg=param)
        np.testing.assert_allclose(eps_elbo, dsm_g2, rtol=1e-9, err_msg=param)
        np.testing.assert_allclose(x0_elbo, dsm_g2, rtol=1e-9, err_msg=param)


# ---------------------------------------------------------------- explicit and sliced SM
W4 = np.array([[0.6, -0.2, 0.3, 0.1], [0.2, 0.4, -0.5, 0.0], [-0.3, 0.1, 0.7, 0.2],
               [0.1, 0.3, -0.1, -0.6]])


def score4_jax(x):  # x: (B, 2, 2), a nonlinear score with a full Jacobian
    flat = x.reshape(x.shape[0], 4)
    return (jnp.tanh(flat @ W4.T) + 0.3 * flat).reshape(x.shape)


def score4_np(flat):
    h = np.tanh(flat @ W4.T)
    J = (1 - h**2)[:, :, None] * W4[None] + 0.3 * np.eye(4)[None]
    return h + 0.3 * flat, J


def test_explicit_and_sliced_match_numpy():
    """ESM (exact trace), Hutchinson ESM, SSM and SSM-VR on fixed x (B, 2, 2) and fixed probes,
    against the analytic Jacobian in numpy. rtol 1e-10."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 2, 2))
    v = rng.normal(size=(5, 3, 2, 2))
    s, J = score4_np(x.reshape(3, 4))
    vf = v.reshape(5, 3, 4)
    vJv = np.einsum("kbi,bij,kbj->kb", vf, J, vf)
    vs = np.einsum("kbi,bi->kb", vf, s)
    half_s2 = 0.5 * np.sum(s**2, 1)
    np.testing.assert_allclose(losses.explicit_score_matching(score4_jax, x),
                               half_s2 + np.trace(J, axis1=1, axis2=2), rtol=1e-10)
    np.testing.assert_allclose(losses.explicit_score_matching(score4_jax, x, probes=v),
                               half_s2 + vJv.mean(0), rtol=1e-10)
    np.testing.assert_allclose(losses.sliced_score_matching(score4_jax, x, v),
                               (vJv + 0.5 * vs**2).mean(0), rtol=1e-10)
    np.testing.assert_allclose(losses.sliced_score_matching(score4_jax, x, v,
                                                            variance_reduction=True),
                               vJv.mean(0) + half_s2, rtol=1e-10)


@pytest.mark.parametrize("param", ["eps", "x0"])
def test_noise_conditional_esm_matches_numpy(param):
    """lambda(t) [1/2 ||s||^2 + Tr grad s] at x_t for the score implied by an eps- or x0-network
    (the x0 form s = -(x - alpha out(x)) / sigma^2 depends on x directly). rtol 1e-10."""
    sde = SDES["vp"]()
    x0, z = fixed_inputs(seed=7)
    t = np.array([0.02, 0.2, 0.5, 0.8, 1.0])
    a, s, g2 = vp_np(t)
    x_t = a[:, None] * x0 + s[:, None] * z
    h = np.tanh(x_t @ W.T)
    J_out = (1 - h**2)[:, :, None] * W[None] * (1 + t)[:, None, None]
    out = model_np(x_t, t)
    if param == "eps":
        score, J = -out / s[:, None], -J_out / s[:, None, None]
    else:
        score = -(x_t - a[:, None] * out) / s[:, None] ** 2
        J = -(np.eye(3)[None] - a[:, None, None] * J_out) / s[:, None, None] ** 2
    want = g2 * (0.5 * np.sum(score**2, 1) + np.trace(J, axis1=1, axis2=2))
    got = losses.noise_conditional_loss(losses.explicit_score_matching, model_jax, x0, z, t,
                                        sde=sde, parameterization=sde_lib.get_parameterization(
                                            param), weighting=losses.likelihood_weighting)
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("kind", losses.PROBES)
def test_probes_have_identity_second_moment(kind):
    """E[v v^T] = I for every probe law; sphere probes have norm sqrt(d) exactly. Entry (j, l)
    of the mean of n outer products has standard error <= sqrt(E[v_j^2 v_l^2] / n), and
    E[v_j^2 v_l^2] <= 3 for all three laws (Gaussian diagonal; sphere: 3 d / (d + 2))."""
    n = 20000
    v = losses.sample_probes(jax.random.PRNGKey(0), (4, 2, 3), n // 4, kind)
    chex.assert_shape(v, (n // 4, 4, 2, 3))
    flat = np.asarray(v).reshape(n, 6)
    second = flat.T @ flat / n
    assert np.max(np.abs(second - np.eye(6))) <= Z * math.sqrt(3 / n)
    if kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(flat, axis=1), math.sqrt(6), rtol=1e-12)
    if kind == "rademacher":
        np.testing.assert_array_equal(np.abs(flat), 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", losses.PROBES)
def test_hutchinson_and_sliced_are_unbiased(kind):
    """Over K random probes, the mean of the per-probe Hutchinson ESM and of the per-probe SSM
    equals exact ESM within Z standard errors (sample std / sqrt(K)); the K-probe functions return
    that mean. Rademacher on a diagonal would be exact, so the Jacobian here is full."""
    K = 4000
    x = np.random.default_rng(8).normal(size=(3, 2, 2))
    exact = np.asarray(losses.explicit_score_matching(score4_jax, x))
    v = losses.sample_probes(jax.random.PRNGKey(1), x.shape, K, kind)
    estimators = (lambda p: losses.explicit_score_matching(score4_jax, x, probes=p),
                  lambda p: losses.sliced_score_matching(score4_jax, x, p))
    for fn in estimators:
        per_probe = np.asarray(jax.vmap(lambda p, fn=fn: fn(p[None]))(v))  # (K, B)
        mean = per_probe.mean(0)
        np.testing.assert_allclose(fn(v), mean, rtol=1e-10)
        se = per_probe.std(0, ddof=1) / math.sqrt(K)
        assert np.all(se > 0)
        np.testing.assert_array_less(np.abs(mean - exact), Z * se)


@pytest.mark.slow
def test_dsm_minus_esm_is_model_independent():
    """E[DSM] - E[ESM] = lambda d / (2 sigma^2) for any model (Vincent 2011): by Stein's lemma
    E[s(x_t) . z] = sigma E[Tr grad s]. Two different v-models on the same (x0, z), VP, t = 0.4,
    sigma^2 weighting (constant d / 2): the paired mean of the differences is 0 and each mean is
    d / 2, within Z standard errors of the per-sample differences."""
    n, d = 4000, 3
    sde = SDES["vp"]()
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x0 = 0.7 * jax.random.normal(k1, (n, d)) + jnp.array([[1.0, -0.5, 0.2]])
    z = jax.random.normal(k2, (n, d))
    t = jnp.full((n,), 0.4)
    p = sde_lib.get_parameterization("v")
    W2 = jnp.array([[0.3, 0.2, 0.0], [-0.1, 0.4, 0.3], [0.2, 0.0, -0.5]])
    models = [model_jax, lambda x, t: jnp.sin(x @ W2.T) + 0.5 * x * t[:, None]]
    diffs = []
    for m in models:
        dsm = losses.dsm_loss(m, x0, z, t, sde=sde, parameterization=p)
        esm = losses.noise_conditional_loss(losses.explicit_score_matching, m, x0, z, t, sde=sde,
                                            parameterization=p)
        diffs.append(np.asarray(dsm - esm))
    for D in diffs:
        assert abs(D.mean() - d / 2) <= Z * D.std(ddof=1) / math.sqrt(n)
    paired = diffs[0] - diffs[1]
    assert abs(paired.mean()) <= Z * paired.std(ddof=1) / math.sqrt(n)


# ---------------------------------------------------------------- recovery of a Gaussian score
MU = np.array([1.0, -0.5])
SIGMA = np.array([[1.0, 0.6], [0.6, 0.8]])


def exact_moment_samples(n=32, seed=9):
    """x0 (n, 2) and z (n, 2) whose empirical first and second moments (ddof 0) are exactly
    those of N(MU, SIGMA) x N(0, I). Every loss below is, for a linear model, quadratic in
    (x0, z) for fixed probes, so its sample mean equals its expectation and the empirical
    minimizer is the population one: the exact score."""
    G = np.random.default_rng(seed).normal(size=(n, 4))
    G -= G.mean(0)
    L = np.linalg.cholesky(G.T @ G / n)
    Wt = G @ np.linalg.inv(L).T
    return MU + Wt[:, :2] @ np.linalg.cholesky(SIGMA).T, Wt[:, 2:]


def balanced_probes(n, d=2, seed=10):
    """sqrt(d) times the columns of a random orthogonal matrix per example: (d, n, d) with
    (1/d) sum_k v_k v_k^T = I exactly, so sliced objectives equal ESM per example."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, d, d)))
    return math.sqrt(d) * np.transpose(Q, (2, 0, 1))


def fit_linear(loss, steps=40):
    """Minimizes loss(params) over params = (M, c) of out = x M^T + c with optax L-BFGS."""
    params = (jnp.zeros((2, 2)), jnp.zeros(2))
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), value

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None,
                                                    length=steps))(params)
    return params


def linear_model(params):
    M, c = params
    return lambda x, t: x @ M.T + c[None]


RECOVERY_CASES = {
    # name: (sde name, parameterization, per-example loss at fixed t / index)
    "dsm_sigma2_eps": ("vp", "eps", lambda f, x0, z, t, sde, p: losses.dsm_loss(
        f, x0, z, t, sde=sde, parameterization=p)),
    "dsm_likelihood_score_ve": ("ve", "score", lambda f, x0, z, t, sde, p: losses.dsm_loss(
        f, x0, z, t, sde=sde, parameterization=p, weighting=losses.likelihood_weighting)),
    "dsm_none_v": ("vp", "v", lambda f, x0, z, t, sde, p: losses.dsm_loss(
        f, x0, z, t, sde=sde, parameterization=p, weighting=losses.unit_weighting)),
    "eps_simple_x0": ("vp", "x0", lambda f, x0, z, t, sde, p: losses.denoising_loss(
        f, x0, z, t, sde=sde, parameterization=p, target="eps")),
    "x0_elbo_eps": ("subvp", "eps", lambda f, x0, z, t, sde, p: losses.denoising_loss(
        f, x0, z, t, sde=sde, parameterization=p, target="x0", weighting=losses.x0_elbo_weight)),
    "esm_exact_eps": ("vp", "eps", lambda f, x0, z, t, sde, p: losses.noise_conditional_loss(
        losses.explicit_score_matching, f, x0, z, t, sde=sde, parameterization=p)),
    "esm_hutchinson_score_ve": ("ve", "score", lambda f, x0, z, t, sde, p:
                                losses.noise_conditional_loss(functools.partial(
                                    losses.explicit_score_matching,
                                    probes=balanced_probes(x0.shape[0])),
                                    f, x0, z, t, sde=sde, parameterization=p)),
    "ssm_x0": ("vp", "x0", lambda f, x0, z, t, sde, p: losses.noise_conditional_loss(
        functools.partial(losses.sliced_score_matching, probes=balanced_probes(x0.shape[0])),
        f, x0, z, t, sde=sde, parameterization=p)),
    "ssm_vr_v": ("vp", "v", lambda f, x0, z, t, sde, p: losses.noise_conditional_loss(
        functools.partial(losses.sliced_score_matching, probes=balanced_probes(x0.shape[0]),
                          variance_reduction=True),
        f, x0, z, t, sde=sde, parameterization=p)),
}


def assert_recovers(score_fn, alpha, sigma):
    """The fitted score's A (Jacobian) and b (value at 0) equal those of p_t = N(alpha MU,
    alpha^2 SIGMA + sigma^2 I): A = -P, b = P alpha MU, P its precision. L-BFGS on an exactly
    quadratic objective converges to round-off (measured ~1e-15); atol 1e-9 relative to the
    largest entry of P."""
    P = np.linalg.inv(alpha**2 * SIGMA + sigma**2 * np.eye(2))
    A = jax.jacfwd(lambda x: score_fn(x[None])[0])(jnp.zeros(2))
    b = score_fn(jnp.zeros((1, 2)))[0]
    scale = np.abs(P).max()
    np.testing.assert_allclose(A / scale, -P / scale, atol=1e-9)
    np.testing.assert_allclose(b / scale, P @ (alpha * MU) / scale, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RECOVERY_CASES))
def test_loss_recovers_gaussian_score(case):
    """Each continuous loss, minimized over linear models at fixed t = 0.35, recovers the exact
    marginal score of Gaussian data (closed form from alpha_t, sigma_t of the SDE)."""
    sde_name, param, per_example = RECOVERY_CASES[case]
    sde, p = SDES[sde_name](), sde_lib.get_parameterization(param)
    x0, z = exact_moment_samples()
    t = jnp.full((x0.shape[0],), 0.35)
    params = fit_linear(lambda q: jnp.mean(per_example(linear_model(q), x0, z, t, sde, p)))
    alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(t[:1]))
    score_fn = losses.get_model_score_fn(linear_model(params), sde, p)
    assert_recovers(lambda x: score_fn(x, jnp.full((x.shape[0],), 0.35)), alpha, sigma)


@pytest.mark.parametrize("target,weight", [("eps", "simple"),
                                           pytest.param("eps", "elbo", marks=pytest.mark.slow),
                                           pytest.param("x0", "elbo", marks=pytest.mark.slow)])
def test_ddpm_loss_recovers_gaussian_score(target, weight):
    """The discrete losses at a fixed index i = 30 of the N = 100 chain recover the score of
    q(x_i) = N(sqrt(alpha_bar_i) MU, alpha_bar_i SIGMA + (1 - alpha_bar_i) I)."""
    N, i0 = 100, 30
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    chain = sde_lib.DDPMChain.from_sde(sde)
    p = sde_lib.get_parameterization("x0" if target == "eps" else "v")
    x0, z = exact_moment_samples(seed=11)
    i = jnp.full((x0.shape[0],), i0)
    w = functools.partial(losses.DISCRETE_TARGET_WEIGHTINGS[target][weight], variance="beta")
    params = fit_linear(lambda q: jnp.mean(losses.ddpm_loss(
        linear_model(q), x0, z, i, sde=sde, chain=chain, parameterization=p, target=target,
        weighting=w)))
    ab = float(chain.alphas_cumprod[i0])
    a, s = jnp.full((1,), math.sqrt(ab)), jnp.full((1,), math.sqrt(1 - ab))
    f = linear_model(params)
    assert_recovers(lambda x: p.to_score(f(x, jnp.full((1,), (i0 + 1) / N)), x, a, s),
                    math.sqrt(ab), math.sqrt(1 - ab))


# ---------------------------------------------------------------- time sampling
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "bm"])
def test_importance_sampling_inverts_the_cdf(sde_name):
    """t = F^{-1}(u) for the density g^2 / sigma^2 on [eps, T]: with the same key, the numpy CDF
    F(t) = (l(eps) - l(t)) / (l(eps) - l(T)), l = log(alpha^2 / sigma^2), returns the uniform u
    (bisection to float64 round-off: atol 1e-10); weight = (T - eps)^{-1} Z sigma^2 / g^2."""
    sde, ref = SDES[sde_name](), NP_SDES[sde_name]
    key = jax.random.PRNGKey(3)
    t, w = losses.sample_time_importance(key, sde, 500, EPS)
    u = np.asarray(jax.random.uniform(key, (500,)))

    def ell(tt):
        a, s, _ = ref(np.asarray(tt, float))
        return np.log(a**2 / s**2)

    Zn = ell(EPS) - ell(sde.T)
    t = np.asarray(t)
    assert np.all((t >= EPS) & (t <= sde.T))
    np.testing.assert_allclose((ell(EPS) - ell(t)) / Zn, u, atol=1e-10)
    _, s, g2 = ref(t)
    np.testing.assert_allclose(w, Zn * s**2 / (g2 * (sde.T - EPS)), rtol=1e-6)


@pytest.mark.slow
def test_importance_weighted_estimate_is_unbiased():
    """E[w f(t)] under the importance sampler equals (T - eps)^{-1} int f dt (scipy quad) for the
    likelihood-weighted error profile f = g^2 / sigma^2 * (1 + t) of a VP: Z standard errors."""
    sde = SDES["vp"]()
    t, w = losses.sample_time_importance(jax.random.PRNGKey(4), sde, 20000, EPS)
    t, w = np.asarray(t), np.asarray(w)

    def f(tt):
        _, s, g2 = vp_np(np.asarray(tt, float))
        return g2 / s**2 * (1 + tt)

    exact = scipy.integrate.quad(f, EPS, 1.0, points=[1e-4, 1e-3, 1e-2], limit=200)[0]
    est = w * f(t)
    assert abs(est.mean() - exact / (1 - EPS)) <= Z * est.std(ddof=1) / math.sqrt(len(est))
    tu, wu = losses.sample_time_uniform(jax.random.PRNGKey(5), sde, 1000, EPS)
    np.testing.assert_array_equal(wu, 1.0)
    assert np.all((np.asarray(tu) >= EPS) & (np.asarray(tu) <= 1.0))


# ---------------------------------------------------------------- gradients at the ends
def _param_model(params):
    M, c = params
    return lambda x, t: jnp.tanh(x @ M.T) * (1 + t)[:, None] + c[None]


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_gradients_finite_at_eps_and_T(sde_name):
    """Gradients of every continuous loss and weighting w.r.t. model parameters are finite at
    t = eps and t = T, for every parameterization."""
    sde = SDES[sde_name]()
    x0, z = fixed_inputs(B=4, seed=12)
    params = (jnp.asarray(W), jnp.asarray(C))
    probes = balanced_probes(4, d=3)[:2]

    def all_losses(q, t, p):
        f = _param_model(q)
        kw = dict(sde=sde, parameterization=p)
        out = [losses.dsm_loss(f, x0, z, t, weighting=w, **kw)
               for w in losses.SCORE_WEIGHTINGS.values()]
        for target, table in losses.CONTINUOUS_TARGET_WEIGHTINGS.items():
            out += [losses.denoising_loss(f, x0, z, t, target=target, weighting=w, **kw)
                    for w in table.values()]
        for obj in (losses.explicit_score_matching,
                    functools.partial(losses.sliced_score_matching, probes=probes)):
            out += [losses.noise_conditional_loss(obj, f, x0, z, t, weighting=w, **kw)
                    for w in losses.SCORE_WEIGHTINGS.values()]
        return jnp.stack(out)

    for param in PARAMS:
        p = sde_lib.get_parameterization(param)
        for t0 in (EPS, sde.T):
            t = jnp.full((4,), t0)
            jac = jax.jacrev(all_losses)(params, t, p)
            for leaf in jax.tree.leaves(jac):
                assert np.all(np.isfinite(leaf)), (param, t0)


@pytest.mark.parametrize("target", ["eps", "x0"])
def test_ddpm_gradients_finite_at_first_and_last_index(target):
    """Gradients of the discrete losses are finite at i = 0 and i = N - 1 for both weightings and
    both reverse variances."""
    sde = sde_lib.VPSDE(N=1000)
    chain = sde_lib.DDPMChain.from_sde(sde)
    x0, z = fixed_inputs(B=4, seed=13)
    params = (jnp.asarray(W), jnp.asarray(C))
    p = sde_lib.get_parameterization("x0")

    def total(q, i, weighting):
        return jnp.sum(losses.ddpm_loss(_param_model(q), x0, z, i, sde=sde, chain=chain,
                                        parameterization=p, target=target, weighting=weighting))

    for weight in losses.DISCRETE_TARGET_WEIGHTINGS[target].values():
        for variance in ("beta", "beta_tilde"):
            for i0 in (0, sde.N - 1):
                g = jax.grad(total)(params, jnp.full((4,), i0),
                                    functools.partial(weight, variance=variance))
                assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


# ---------------------------------------------------------------- the entry point
def _model_multi_axis(x, t):
    return jnp.sin(x) * (1 + t)[:, None, None] - 0.3 * x


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("esm", "ssm") else n for n in sorted(losses.LOSSES)])
def test_get_loss_fn_shapes_determinism_and_reduction(name):
    """Every loss: (B,) finite values for x0 of shape (B, 2, 3) under jit, the same key gives the
    same values, reduce_mean replaces 1/2 sum by the mean over the 6 data entries (x 2/6),
    ConfigDict sections work."""
    sde = SDES["vp"]()
    x0 = jax.random.normal(jax.random.PRNGKey(6), (5, 2, 3))
    cfg = {"name": name, "num_projections": 2}
    if name == "esm":
        cfg["divergence"] = "gaussian"
    loss_fn = losses.get_loss_fn(sde, cfg)
    run = jax.jit(lambda r, x: loss_fn(r, _model_multi_axis, x))
    key = jax.random.PRNGKey(7)
    value = run(key, x0)
    chex.assert_shape(value, (5,))
    assert np.all(np.isfinite(value))
    chex.assert_trees_all_close(run(key, x0), value)
    mean_fn = losses.get_loss_fn(sde, ml_collections.ConfigDict(dict(cfg, reduce_mean=True)))
    chex.assert_trees_all_close(mean_fn(key, _model_multi_axis, x0), value * 2 / 6, rtol=1e-10)


def test_get_loss_fn_composes_the_pieces():
    """The entry point equals the documented composition: rng_t, rng_z, rng_v = split(rng, 3);
    (t, w) from the time sampler; w * per-example loss. Checked for importance-sampled
    likelihood DSM, Gaussian-probe SSM and the DDPM eps loss (rng_i, rng_z = split(rng))."""
    sde = SDES["vp"]()
    x0 = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    key = jax.random.PRNGKey(9)
    kt, kz, kv = jax.random.split(key, 3)
    z = jax.random.normal(kz, x0.shape)
    p = sde_lib.get_parameterization("x0")

    got = losses.get_loss_fn(sde, losses.LossConfig(
        name="dsm", weighting="likelihood", parameterization="x0", time_sampling="importance"))(
            key, model_jax, x0)
    t, w = losses.sample_time_importance(kt, sde, 4, EPS)
    want = w * losses.dsm_loss(model_jax, x0, z, t, sde=sde, parameterization=p,
                               weighting=losses.likelihood_weighting)
    chex.assert_trees_all_close(got, want, rtol=1e-12)

    got = losses.get_loss_fn(sde, losses.LossConfig(
        name="ssm", parameterization="x0", projection="gaussian", num_projections=3))(
            key, model_jax, x0)
    t, _ = losses.sample_time_uniform(kt, sde, 4, EPS)
    v = losses.sample_probes(kv, x0.shape, 3, "gaussian")
    want = losses.noise_conditional_loss(functools.partial(losses.sliced_score_matching,
                                                           probes=v),
                                         model_jax, x0, z, t, sde=sde, parameterization=p)
    chex.assert_trees_all_close(got, want, rtol=1e-12)

    got = losses.get_loss_fn(sde, {"name": "ddpm_eps", "weighting": "elbo", "variance": "beta"})(
        key, model_jax, x0)
    ki, kz2 = jax.random.split(key)
    i = losses.sample_index_uniform(ki, sde.N, 4)
    want = losses.ddpm_loss(model_jax, x0, jax.random.normal(kz2, x0.shape), i, sde=sde,
                            chain=sde_lib.DDPMChain.from_sde(sde),
                            parameterization=sde_lib.get_parameterization("eps"),
                            weighting=functools.partial(losses.ddpm_eps_elbo_weight,
                                                        variance="beta"))
    chex.assert_trees_all_close(got, want, rtol=1e-12)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "dsn"}, r"name must be one of \['ddpm_eps', 'ddpm_x0', 'dsm', 'eps', 'esm'"),
    ({"name": "dsm", "weighting": "simple"}, r"weighting must be one of \['likelihood', 'none'"),
    ({"name": "eps", "weighting": "sigma2"}, r"weighting must be one of \['elbo', 'simple'\]"),
    ({"name": "ddpm_x0", "weighting": "likelihood"}, "weighting must be one of"),
    ({"name": "dsm", "parameterization": "noise"}, "parameterization must be one of"),
    ({"name": "dsm", "time_sampling": "log"}, "time_sampling must be one of"),
    ({"name": "ddpm_eps", "time_sampling": "importance"}, "time_sampling must be 'uniform'"),
    ({"name": "ssm", "projection": "uniform"}, "projection must be one of"),
    ({"name": "esm", "divergence": "hutch"}, "divergence must be one of"),
    ({"name": "ssm", "num_projections": 0}, "num_projections must be an integer >= 1"),
    ({"name": "ddpm_eps", "variance": "fixed"}, "variance must be one of"),
    ({"name": "dsm", "eps": 0.0}, "eps must be a positive real number"),
    ({"name": "dsm", "eps": 2.0}, "eps must be smaller than"),
    ({"name": "dsm", "weigthing": "none"}, r"unknown loss config keys \['weigthing'\]"),
    ({"name": "dsm", "reduce_mean": "yes"}, "reduce_mean must be a bool"),
])
def test_bad_config_raises(cfg, match):
    with pytest.raises(ValueError, match=match):
        losses.get_loss_fn(SDES["vp"](), cfg)


def test_ddpm_loss_needs_vp_type_sde():
    with pytest.raises(ValueError, match="needs an SDE with a DDPM chain"):
        losses.get_loss_fn(SDES["ve"](), {"name": "ddpm_eps"})


def test_bad_shapes_raise():
    sde = SDES["vp"]()
    loss_fn = losses.get_loss_fn(sde, {"name": "dsm"})
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, \*D\)"):
        loss_fn(key, model_jax, jnp.zeros(3))
    with pytest.raises(TypeError, match="x0 must be a floating array .* got dtype int32"):
        loss_fn(key, model_jax, jnp.zeros((4, 3), jnp.int32))
    with pytest.raises(ValueError, match="model_fn output must have the shape of x"):
        loss_fn(key, lambda x, t: x[:, :2], jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="model_fn output must have the shape of x"):
        jax.jit(lambda x: loss_fn(key, lambda x, t: x.sum(1), x))(jnp.zeros((4, 3)))
    p = sde_lib.get_parameterization("eps")
    x0 = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="z must have the shape of x0"):
        losses.dsm_loss(model_jax, x0, jnp.zeros((4, 2)), jnp.ones(4), sde=sde,
                        parameterization=p)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        losses.dsm_loss(model_jax, x0, x0, jnp.ones((4, 1)), sde=sde, parameterization=p)
    with pytest.raises(ValueError, match=r"probes must have shape \(K, \*x.shape\)"):
        losses.sliced_score_matching(score4_jax, jnp.zeros((3, 2, 2)), jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="target must be one of"):
        losses.denoising_loss(model_jax, x0, x0, jnp.ones(4), sde=sde, parameterization=p,
                              target="score")
    with pytest.raises(ValueError, match="projection must be one of"):
        losses.sample_probes(key, (2, 3), 1, "normal")
