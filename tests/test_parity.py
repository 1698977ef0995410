"""Parity with score_sde and diffusers, and the lossless DDPM/SDE seam.

The references are independent numpy transcriptions of score_sde's (``sde_lib.py``,
``sampling.py``, ``losses.py``) and diffusers' (``DDPMScheduler.step``, ``DDIMScheduler.step``,
``set_timesteps``) update rules, written out here on fixed inputs; the project's code runs on the
same inputs and the same noise. float64, each to 1e-10 (round-off).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import sde_lib
from sde_lib import losses
from sde_lib.sampling import build_sampler, grid, pc, reverse_sde, scan_steps

N = 1000
B, D = 4, 3
TOL = dict(rtol=1e-10, atol=1e-12)


def eps_net(x, t):
    """A fixed nonlinear 'network' predicting eps from (x, t); numpy and jax alike."""
    lib = jnp if isinstance(x, jax.Array) else np
    flat = x.reshape(x.shape[0], -1)
    out = lib.tanh(0.7 * flat + 0.3 * lib.roll(flat, 1, axis=1) + 2.0 * t[:, None] - 1.0)
    return out.reshape(x.shape)


def chain_np(N=N, bmin=0.1, bmax=20.0):
    betas = np.linspace(bmin / N, bmax / N, N)
    return betas, np.cumprod(1.0 - betas)


def x_fixed(seed=0, shape=(B, D)):
    return np.random.default_rng(seed).normal(size=shape)


def normal(key, shape):
    return np.asarray(jax.random.normal(key, shape, jnp.float64))


def eps_score_fn_of(net, sde):
    """An eps network turned into a score by the library (``-eps / sigma_t``)."""
    return losses.get_model_score_fn(net, sde, sde_lib.get_parameterization("eps"))


def eps_score_fn(sde):
    return eps_score_fn_of(eps_net, sde)


# ---------------------------------------------------------------- diffusers, transcribed
def diffusers_timesteps(spacing, K, N=N):
    """``DDPMScheduler/DDIMScheduler.set_timesteps`` (steps_offset = 0)."""
    if spacing == "leading":
        return (np.arange(0, K) * (N // K)).round()[::-1].astype(np.int64)
    if spacing == "trailing":
        return np.round(np.arange(N, 0, -N / K)).astype(np.int64) - 1
    return np.linspace(0, N - 1, K).round()[::-1].astype(np.int64)


def diffusers_ddpm_step(model_output, t, prev_t, sample, noise, ab, variance_type,
                        clip=False):
    """``DDPMScheduler.step`` for epsilon prediction."""
    alpha_prod_t = ab[t]
    alpha_prod_t_prev = ab[prev_t] if prev_t >= 0 else 1.0
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
    if clip:
        pred_original_sample = np.clip(pred_original_sample, -1.0, 1.0)
    x0_coeff = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
    xt_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
    pred_prev_sample = x0_coeff * pred_original_sample + xt_coeff * sample
    variance = max((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, 1e-20)
    if variance_type == "fixed_large":
        variance = current_beta_t
    if t > 0:
        pred_prev_sample = pred_prev_sample + variance**0.5 * noise
    return pred_prev_sample


def diffusers_ddim_step(model_output, t, prev_t, sample, noise, ab, eta, clip=False):
    """``DDIMScheduler.step`` for epsilon prediction, ``set_alpha_to_one=True``."""
    alpha_prod_t = ab[t]
    alpha_prod_t_prev = ab[prev_t] if prev_t >= 0 else 1.0
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
    pred_epsilon = model_output
    if clip:
        pred_original_sample = np.clip(pred_original_sample, -1.0, 1.0)
    variance = (1 - alpha_prod_t_prev) / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance**0.5
    direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5 * pred_epsilon
    prev_sample = alpha_prod_t_prev**0.5 * pred_original_sample + direction
    if eta > 0:
        prev_sample = prev_sample + std_dev_t * noise
    return prev_sample


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("spacing,K", [("leading", 1000), ("leading", 50), ("trailing", 50)])
def test_ancestral_step_matches_diffusers(spacing, K, variance, clip):
    """One ``ddpm_ancestral`` step on the chain SDE = DDPMScheduler.step (fixed_small for
    beta_tilde, fixed_large for beta), consecutive (K = N) and strided (K = 50), with and without
    ``clip_sample``; the network's eps enters unchanged."""
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    _, ab = chain_np()
    step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), "ddpm_ancestral", K,
                                    variance=variance, time_grid=spacing, clip_denoised=clip)
    taus = diffusers_timesteps(spacing, K)
    x = 1.7 * x_fixed(1)
    key = jax.random.PRNGKey(3)
    for k in (0, 1, K // 2, K - 2):
        c = jax.tree.map(lambda a, k=k: a[k], coeffs)
        got, _ = step(key, jnp.asarray(x), c)
        tau, prev = taus[k], taus[k + 1]
        want = diffusers_ddpm_step(eps_net(x, np.full(B, (tau + 1) / N)), tau, prev, x,
                                   normal(key, x.shape), ab,
                                   "fixed_small" if variance == "beta_tilde" else "fixed_large",
                                   clip)
        np.testing.assert_allclose(got, want, **TOL, err_msg=f"step {k}")


def test_ancestral_step_matches_score_sde():
    """score_sde's ``AncestralSamplingPredictor`` (VP, variance beta) with its discrete-model
    score ``-eps / sqrt(1 - alpha_bar_i)``: ``x_mean = (x + beta_i s) / sqrt(1 - beta_i)``."""
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    betas, ab = chain_np()
    step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), "ddpm_ancestral", N, variance="beta")
    x, key = x_fixed(2), jax.random.PRNGKey(4)
    for k in (0, 17, 500, 998):
        i = N - 1 - k
        got, _ = step(key, jnp.asarray(x), jax.tree.map(lambda a, k=k: a[k], coeffs))
        score = -eps_net(x, np.full(B, (i + 1) / N)) / np.sqrt(1 - ab[i])
        x_mean = (x + betas[i] * score) / np.sqrt(1 - betas[i])
        np.testing.assert_allclose(got, x_mean + np.sqrt(betas[i]) * normal(key, x.shape), **TOL)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_trajectory_matches_diffusers(spacing, eta):
    """A 50-step DDIM trajectory (eta 0 and 1) on the chain SDE equals DDIMScheduler's, with the
    same starting point and noise. diffusers' DDIM steps to ``t - N // K``: the next timestep for
    "leading" and "trailing" (asserted); for "linspace" the grid is not evenly strided and the
    transcription steps to the next timestep (diffusers' DDPMScheduler rule; see the README's
    porting table)."""
    K = 50
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    _, ab = chain_np()
    step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), "ddim", K, eta=eta,
                                    time_grid=spacing)
    x_T, rng = x_fixed(5), jax.random.PRNGKey(6)
    got = scan_steps(step, rng, jnp.asarray(x_T), coeffs)

    taus = diffusers_timesteps(spacing, K)
    prevs = np.r_[taus[1:], -1]
    if spacing != "linspace":
        np.testing.assert_array_equal(prevs, np.maximum(taus - N // K, -1))  # < 0: alpha = 1
    keys = jax.random.split(rng, K)
    x = x_T
    for k, (tau, prev) in enumerate(zip(taus, prevs, strict=True)):
        x = diffusers_ddim_step(eps_net(x, np.full(B, (tau + 1) / N)), tau, prev, x,
                                normal(keys[k], x.shape), ab, eta)
    np.testing.assert_allclose(got, x, **TOL)


def test_ddim_clip_matches_diffusers():
    """``clip_denoised=True`` is DDIMScheduler's ``clip_sample`` (x0 clipped, eps kept)."""
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    _, ab = chain_np()
    step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), "ddim", 50, eta=0.5,
                                    time_grid="leading", clip_denoised=True)
    x, key = 2.0 * x_fixed(7), jax.random.PRNGKey(8)
    taus = diffusers_timesteps("leading", 50)
    for k in (0, 10, 48):
        got, _ = step(key, jnp.asarray(x), jax.tree.map(lambda a, k=k: a[k], coeffs))
        want = diffusers_ddim_step(eps_net(x, np.full(B, (taus[k] + 1) / N)), taus[k],
                                   taus[k + 1], x, normal(key, x.shape), ab, 0.5, clip=True)
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_spacings_are_diffusers_timesteps(spacing):
    """``time_grid`` spacings evaluate at ``t = (tau + 1) T / N`` of diffusers' timesteps ``tau``
    for several K, on a chain of another N and T too."""
    for n, T, K in [(1000, 1.0, 50), (1000, 1.0, 7), (1000, 1.0, 1000), (300, 2.0, 40)]:
        sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=n, T=T)
        got = grid.evaluation_times(spacing, K, sde, 1e-3)
        np.testing.assert_allclose(got, (diffusers_timesteps(spacing, K, n) + 1) * T / n,
                                   rtol=1e-15)


def test_karras_grid():
    """``time_grid="karras"``: noise-to-signal ratios sigma/alpha equal Karras et al.'s Eq. 5
    with rho = 7 between r(T) and r(eps), on VP and VE; endpoints exact."""
    for sde in (sde_lib.VPSDE(), sde_lib.VESDE()):
        K, eps = 18, 1e-3
        t = grid.evaluation_times("karras", K, sde, eps)
        alpha, sigma = (np.asarray(v) for v in sde.marginal_coeffs(jnp.asarray(t)))
        a_ends, s_ends = sde.marginal_coeffs(jnp.array([1.0, eps]))
        r_max, r_min = (float(v) for v in s_ends / a_ends)
        k = np.arange(K) / (K - 1)
        want = (r_max ** (1 / 7) + k * (r_min ** (1 / 7) - r_max ** (1 / 7))) ** 7
        np.testing.assert_allclose(sigma / alpha, want, rtol=1e-10)
        assert t[0] == sde.T and t[-1] == eps and np.all(np.diff(t) < 0)


def test_logsnr_grid():
    """``time_grid="logsnr"``: ``log(alpha / sigma)`` (computed here from the marginal) uniform
    between its values at T and eps, on VP, VE and sub-VP; endpoints exact."""
    for sde in (sde_lib.VPSDE(), sde_lib.VESDE(), sde_lib.subVPSDE()):
        K, eps = 12, 1e-3
        t = grid.evaluation_times("logsnr", K, sde, eps)
        alpha, sigma = (np.asarray(v, np.float64) for v in sde.marginal_coeffs(jnp.asarray(t)))
        lam = np.log(alpha / sigma)
        np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / (K - 1), rtol=1e-5)
        assert t[0] == sde.T and t[-1] == eps and np.all(np.diff(t) < 0)


def test_bad_grid_and_clip_raise():
    sde = sde_lib.DiscreteVPSDE(N=100)
    with pytest.raises(ValueError, match="needs num_steps <= N = 100"):
        sde_lib.sample(jax.random.PRNGKey(0), sde, eps_score_fn(sde), (2, 2), "ddim",
                       num_steps=200, time_grid="trailing")
    with pytest.raises(ValueError, match="time_grid must be one of"):
        sde_lib.sample(jax.random.PRNGKey(0), sde, eps_score_fn(sde), (2, 2), "ddim",
                       num_steps=20, time_grid="quadratik")
    with pytest.raises(ValueError, match=r"clip_denoised must be False, True"):
        sde_lib.sample(jax.random.PRNGKey(0), sde, eps_score_fn(sde), (2, 2), "ddim",
                       num_steps=20, clip_denoised=(1.0, -1.0))


# ---------------------------------------------------------------- score_sde predictors, corrector
def test_reverse_diffusion_and_euler_maruyama_match_score_sde():
    """score_sde's ``ReverseDiffusionPredictor`` (VP: ``f = (sqrt(1 - beta_i) - 1) x``,
    ``G = sqrt(beta_i)``, index ``floor(t (N - 1) / T)``, which maps our ``t_i = (i + 1) / N`` to
    ``i``) and ``EulerMaruyamaPredictor`` (``dt = -1 / N``) for VP and VE, one step each."""
    betas, _ = chain_np()
    vp, ve = sde_lib.VPSDE(), sde_lib.VESDE()
    x, key = x_fixed(9), jax.random.PRNGKey(10)
    z = normal(key, x.shape)
    score = lambda x, t: -eps_net(x, t) * (1.0 + t[:, None])  # any score function  # noqa: E731
    for i in (0, 1, 400, 999):
        t = (i + 1) / N
        tb = np.full(B, t)
        assert int(np.floor(t * (N - 1))) == i
        c = grid.GridCoeffs(t=jnp.asarray(t), t_next=jnp.asarray(t - 1.0 / N))
        got, _ = reverse_sde.reverse_diffusion(key, jnp.asarray(x), c, sde=vp, score_fn=score)
        f, G = (np.sqrt(1 - betas[i]) - 1) * x, np.sqrt(betas[i])
        x_mean = x - (f - G**2 * score(x, tb))
        np.testing.assert_allclose(got, x_mean + G * z, **TOL)

        for sde in (vp, ve):
            got, _ = reverse_sde.euler_maruyama(key, jnp.asarray(x), c, sde=sde, score_fn=score)
            if sde is vp:
                beta_t = 0.1 + t * (20.0 - 0.1)
                drift, diffusion = -0.5 * beta_t * x, np.sqrt(beta_t)
            else:
                sig = 0.01 * (50.0 / 0.01) ** t
                drift, diffusion = 0 * x, sig * np.sqrt(2 * (np.log(50.0) - np.log(0.01)))
            rev_drift = drift - diffusion**2 * score(x, tb)
            dt = -1.0 / N
            want = x + rev_drift * dt + diffusion * np.sqrt(-dt) * z
            np.testing.assert_allclose(got, want, **TOL)


def test_ve_reverse_diffusion_rule_on_documented_grid():
    """VE reverse diffusion is score_sde's rule ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)`` on this
    project's documented grid ``sigma_i = sigma((i + 1) / N)``, ``sigma_{-1} = sigma_min`` (its
    step variances add up to the exact transition variance; score_sde's grid is
    ``sigma(i / (N - 1))`` with ``sigma_{-1} = 0``)."""
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=N)
    sig = 0.01 * (50.0 / 0.01) ** (np.arange(1, N + 1) / N)
    np.testing.assert_allclose(ve.discrete_sigmas, sig, rtol=1e-12)
    x, key = x_fixed(11), jax.random.PRNGKey(12)
    z = normal(key, x.shape)
    score = lambda x, t: -x / (1.0 + t[:, None])  # noqa: E731
    for i in (0, 1, 500, 999):
        t = (i + 1) / N
        got, _ = reverse_sde.reverse_diffusion(key, jnp.asarray(x),
                                               grid.GridCoeffs(t=jnp.asarray(t)), sde=ve,
                                               score_fn=score)
        G2 = sig[i] ** 2 - (sig[i - 1] if i > 0 else 0.01) ** 2
        want = x + G2 * score(x, np.full(B, t)) + np.sqrt(G2) * z
        np.testing.assert_allclose(got, want, **TOL)
    # the step variances add up to the exact marginal variance sigma(t)^2 - sigma_min^2
    _, G = ve.discretize(jnp.zeros((N, 1)), jnp.arange(1, N + 1) / N)
    np.testing.assert_allclose(np.cumsum(np.asarray(G) ** 2),
                               np.asarray(ve.marginal_coeffs(jnp.arange(1, N + 1) / N)[1]) ** 2,
                               rtol=1e-10)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_langevin_corrector_matches_score_sde(kind):
    """score_sde's ``LangevinCorrector`` (2 steps, snr 0.16): step size
    ``2 alpha (snr ||z|| / ||s||)^2`` with batch-mean norms and ``alpha = 1 - beta_i`` (VP) or
    ``1`` (VE); here ``alpha`` comes from consecutive chain times of the chain SDE."""
    betas, _ = chain_np()
    sde = (sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N) if kind == "vp"
           else sde_lib.VESDE(N=N))
    score = lambda x, t: -x * (1.5 + t[:, None]) + 0.2  # noqa: E731
    x0, key = x_fixed(13), jax.random.PRNGKey(14)
    i = 600
    c = jax.tree.map(lambda a: a[N - 1 - i], grid.chain_grid(
        sde, grid.evaluation_times("uniform", N, sde, 1.0 / N)))
    got, got_mean = pc.langevin_corrector(key, jnp.asarray(x0), c, score_fn=score, snr=0.16,
                                          num_steps=2)
    alpha = 1 - betas[i] if kind == "vp" else 1.0
    x = x0
    for k in jax.random.split(key, 2):
        grad = score(x, np.full(B, (i + 1) / N))
        noise = normal(k, x.shape)
        grad_norm = np.linalg.norm(grad, axis=-1).mean()
        noise_norm = np.linalg.norm(noise, axis=-1).mean()
        step_size = (0.16 * noise_norm / grad_norm) ** 2 * 2 * alpha
        x_mean = x + step_size * grad
        x = x_mean + np.sqrt(step_size * 2) * noise
    np.testing.assert_allclose(got, x, **TOL)
    np.testing.assert_allclose(got_mean, x_mean, **TOL)


# ---------------------------------------------------------------- losses, score_sde's
@pytest.mark.parametrize("reduce_mean", [False, True])
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_dsm_loss_matches_score_sde(likelihood_weighting, reduce_mean):
    """``get_sde_loss_fn`` (continuous VP, eps network read as ``score = -eps / std``):
    ``reduce_op = mean if reduce_mean else 0.5 * sum`` of ``(score std + z)^2``, or of
    ``(score + z / std)^2`` times ``g^2`` with likelihood weighting; per example."""
    sde = sde_lib.VPSDE()
    x0, rng = x_fixed(15, (B, 2, 3)), jax.random.PRNGKey(16)
    cfg = sde_lib.LossConfig(name="dsm", weighting="likelihood" if likelihood_weighting
                             else "sigma2", reduce_mean=reduce_mean)
    got = sde_lib.get_loss_fn(sde, cfg)(rng, eps_net, jnp.asarray(x0))
    rng_t, rng_z, _ = jax.random.split(rng, 3)
    t = np.asarray(jax.random.uniform(rng_t, (B,), jnp.float64)) * (1 - 1e-5) + 1e-5
    z = normal(rng_z, x0.shape)
    beta = 0.1 + t * 19.9
    log_mean_coeff = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    mean = np.exp(log_mean_coeff)[:, None, None] * x0
    std = np.sqrt(1.0 - np.exp(2.0 * log_mean_coeff))
    perturbed = mean + std[:, None, None] * z
    score = -eps_net(perturbed, t) / std[:, None, None]
    reduce_op = ((lambda a: np.mean(a, -1)) if reduce_mean
                 else (lambda a: 0.5 * np.sum(a, -1)))
    if not likelihood_weighting:
        want = reduce_op(np.square(score * std[:, None, None] + z).reshape(B, -1))
    else:
        want = reduce_op(np.square(score + z / std[:, None, None]).reshape(B, -1)) * beta
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("reduce_mean", [False, True])
def test_ddpm_loss_matches_score_sde(reduce_mean):
    """``get_ddpm_loss_fn`` on the chain SDE: ``x = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) z``
    at ``labels ~ U{0..N-1}``, ``reduce_op((eps_theta - z)^2)``, ``reduce_op`` as for DSM."""
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    _, ab = chain_np()
    x0, rng = x_fixed(17, (B, D)), jax.random.PRNGKey(18)
    got = sde_lib.get_loss_fn(sde, {"name": "ddpm_eps", "reduce_mean": reduce_mean})(
        rng, eps_net, jnp.asarray(x0))
    rng_i, rng_z = jax.random.split(rng)
    labels = np.asarray(losses.sample_index_uniform(rng_i, N, B))
    noise = normal(rng_z, x0.shape)
    perturbed = np.sqrt(ab[labels])[:, None] * x0 + np.sqrt(1 - ab[labels])[:, None] * noise
    sq = np.square(eps_net(perturbed, (labels + 1) / N) - noise)
    want = np.mean(sq, -1) if reduce_mean else 0.5 * np.sum(sq, -1)
    np.testing.assert_allclose(got, want, **TOL)


# ---------------------------------------------------------------- the seam
@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.DiscreteVPSDE(), sde_lib.CosineVPSDE()],
                         ids=["vp", "chain", "cosine"])
@pytest.mark.parametrize("method,K", [("ddpm_ancestral", 1000), ("ddim", 50), ("ddim", 10)])
def test_eps_reaches_chain_samplers_unchanged(sde, method, K):
    """The issue's reproduction: an eps network read through ``get_score_fn`` and back by the
    sampler's own coefficients gives the network's eps at every grid point (it gave 0.954 at
    i = 0 when the sampler used the chain's sqrt(1 - alpha_bar) and the score the SDE's
    sigma(t_i))."""
    ones = lambda x, t: jnp.ones_like(x)  # noqa: E731
    score = losses.get_model_score_fn(ones, sde, sde_lib.get_parameterization("eps"))
    _, c, _ = build_sampler(sde, score, method, K)
    x = jnp.zeros((K, 2))
    eps = -c.sigma[:, None] * score(x, c.t)
    np.testing.assert_allclose(eps, 1.0, rtol=1e-12)


def test_eps_model_through_ddpm_samplers_is_exact():
    """An eps network through ``ddpm_ancestral`` (both variances) and ``ddim`` (eta 0, 1) on the
    continuous VP SDE: each step equals the step written with the network's eps directly and the
    SDE's (alpha, sigma) at the chain times, to 1e-12."""
    sde = sde_lib.VPSDE()
    x, key = x_fixed(19), jax.random.PRNGKey(20)
    z = normal(key, x.shape)
    for method, opts in [("ddpm_ancestral", {"variance": "beta"}),
                         ("ddpm_ancestral", {"variance": "beta_tilde"}),
                         ("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0})]:
        step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), method, 100, **opts)
        for k in (0, 50, 98):
            c = jax.tree.map(lambda a, k=k: a[k], coeffs)
            got, _ = step(key, jnp.asarray(x), c)
            t, s = float(c.t), float(c.t_next)
            a_t, s_t = (float(v) for v in sde.marginal_coeffs(jnp.asarray(t)))
            a_s, s_s = (float(v) for v in sde.marginal_coeffs(jnp.asarray(s)))
            e = eps_net(x, np.full(B, t))
            x0 = (x - s_t * e) / a_t
            b2 = s_t**2 - (a_t / a_s * s_s) ** 2
            v = b2 * s_s**2 / s_t**2
            if method == "ddpm_ancestral":
                cz2 = v if opts["variance"] == "beta_tilde" else b2
                want = a_s * x0 + a_t / a_s * s_s**2 / s_t * e + np.sqrt(cz2) * z
            else:
                cz2 = opts["eta"] ** 2 * v
                want = a_s * x0 + np.sqrt(s_s**2 - cz2) * e + np.sqrt(cz2) * z
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13, err_msg=method)


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(N=40), sde_lib.DiscreteVPSDE(N=40)],
                         ids=["vp", "chain"])
def test_eps_model_through_negative_elbo_is_exact(sde):
    """``ddpm_negative_elbo`` with the eps network's score equals the bound written term by term
    with the network's eps itself (``DDPMChain.vb_term``, ``p_mean``, ``prior_kl`` and the same
    draws), to 1e-12."""
    x0, rng = x_fixed(21, (B, D)) * 0.5, jax.random.PRNGKey(22)
    got = sde_lib.ddpm_negative_elbo(rng, sde, eps_score_fn(sde), jnp.asarray(x0),
                                     variance="beta_tilde", decoder="gaussian")
    chain = sde_lib.DDPMChain.from_sde(sde)
    n = chain.N
    total = np.asarray(chain.prior_kl(x0))
    for i in range(n):
        ib = jnp.full((B,), i)
        x_i = chain.q_sample(x0, ib, jax.random.normal(jax.random.fold_in(rng, i), x0.shape))
        e = eps_net(x_i, jnp.full((B,), (i + 1) / n))
        if i > 0:
            total = total + np.asarray(chain.vb_term(x0, x_i, ib, e, "beta_tilde",
                                                     discretized=False))
        else:
            logvar = chain.posterior_log_variance_clipped[0]
            mean = chain.p_mean(x_i, ib, e)
            total = total - np.sum(np.asarray(sde_lib.gaussian_log_likelihood(x0, mean, logvar)),
                                   -1)
    np.testing.assert_allclose(got.total, total, rtol=1e-12)


def test_eps_model_probability_flow_drift():
    """The probability-flow drift ``log_likelihood`` integrates, from the eps network's score, is
    ``f(t) x + g(t)^2 eps / (2 sigma_t)`` with the network's eps (1e-12)."""
    for sde in (sde_lib.VPSDE(), sde_lib.DiscreteVPSDE()):
        x, t = jnp.asarray(x_fixed(23)), jnp.array([0.01, 0.2, 0.55, 1.0])
        drift, _ = sde.reverse(eps_score_fn(sde), probability_flow=True).sde(x, t)
        _, sigma = sde.marginal_coeffs(t)
        want = (sde.drift_coeff(t)[:, None] * x
                + (sde.diffusion_coeff(t) ** 2 / (2 * sigma))[:, None] * eps_net(x, t))
        np.testing.assert_allclose(drift, want, rtol=1e-12)


def test_eps_model_through_log_likelihood():
    """``log_likelihood`` of the optimal eps network of Gaussian data ``N(0, s^2 I)``,
    ``eps(x, t) = sigma_t x / (alpha_t^2 s^2 + sigma_t^2)`` (E[eps | x_t]), read through
    ``get_score_fn``'s conversion, is the exact log-density at the data (scipy): the error,
    5e-5 nats, is that of starting at t = 1e-5 instead of 0 (rtol 1e-4 on |log p| ~ 1-3)."""
    sde = sde_lib.VPSDE()
    s2 = 0.6**2

    def eps_model(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        return (sigma / (alpha**2 * s2 + sigma**2))[:, None] * x

    x = jnp.asarray(x_fixed(25) * 0.6)
    logp, _ = sde_lib.log_likelihood(jax.random.PRNGKey(0), sde, eps_score_fn_of(eps_model, sde),
                                     x, divergence="exact", rtol=1e-8, atol=1e-8)
    want = scipy.stats.norm.logpdf(np.asarray(x), scale=0.6).sum(1)
    np.testing.assert_allclose(logp, want, rtol=1e-4)


# ---------------------------------------------------------------- the chain as an SDE
@pytest.mark.parametrize("base", [sde_lib.VPSDE(N=1000), sde_lib.VPSDE(N=100, T=2.0),
                                  sde_lib.CosineVPSDE(N=1000)], ids=["vp", "vp100_T2", "cosine"])
def test_chain_sde_marginal_is_the_chain(base):
    """``DiscreteVPSDE.from_sde``: ``alpha_{t_i}^2 = alpha_bar_i`` and ``sigma_{t_i}^2 =
    1 - alpha_bar_i`` at ``t_i = (i + 1) T / N`` (numpy cumprod of the betas, round-off);
    ``discretize`` at ``t_i`` is the chain step; ``with_num_steps(K)`` gives the exact K-step
    transitions."""
    sde = sde_lib.DiscreteVPSDE.from_sde(base)
    betas = np.asarray(base.discrete_betas, np.float64)
    ab = np.cumprod(1.0 - betas)
    t = np.arange(1, base.N + 1) * base.T / base.N
    alpha, sigma = (np.asarray(v) for v in sde.marginal_coeffs(jnp.asarray(t)))
    np.testing.assert_allclose(alpha**2, ab, rtol=1e-12)
    np.testing.assert_allclose(sigma**2, 1.0 - ab, rtol=1e-12)
    _, G = sde.discretize(jnp.zeros((base.N, 1)), jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(G) ** 2, betas, rtol=1e-12)
    np.testing.assert_allclose(sde.discrete_betas, betas, rtol=0)
    # rate: -N / T log(1 - beta_i) inside the interval
    mid = (np.arange(base.N) + 0.5) * base.T / base.N
    np.testing.assert_allclose(sde.beta(jnp.asarray(mid)), -np.log1p(-betas) * base.N / base.T,
                               rtol=1e-12)
    K = 10
    tk = np.arange(K + 1) * base.T / K
    ak = np.asarray(sde.marginal_coeffs(jnp.asarray(tk))[0])
    np.testing.assert_allclose(sde.with_num_steps(K).discrete_betas,
                               1 - ak[1:] ** 2 / ak[:-1] ** 2, rtol=1e-10)


def test_chain_sde_bad_betas_raise():
    for betas in ([0.1, 1.0], [[0.1]], [], [0.2, np.nan]):
        with pytest.raises(ValueError, match="betas must be a 1-D array"):
            sde_lib.DiscreteVPSDE(betas)


def test_chain_sde_samplers_are_the_chain():
    """Ancestral sampling on ``DiscreteVPSDE`` is ``DDPMChain.ancestral_step`` with the
    network's eps, step after step (1e-12)."""
    sde = sde_lib.DiscreteVPSDE(N=100)
    chain = sde_lib.DDPMChain.from_sde(sde)
    step, coeffs, _ = build_sampler(sde, eps_score_fn(sde), "ddpm_ancestral", 100)
    x, key = jnp.asarray(x_fixed(24)), jax.random.PRNGKey(25)
    for k in range(0, 99, 7):
        i = 99 - k
        got, _ = step(key, x, jax.tree.map(lambda a, k=k: a[k], coeffs))
        want = chain.ancestral_step(key, x, jnp.full((B,), i),
                                    eps_net(x, jnp.full((B,), (i + 1) / 100)), "beta_tilde")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)



def test_chain_sde_linear_schedule_is_from_sde_of_vp():
    """``DiscreteVPSDE(beta_min=, beta_max=, N=, T=)`` is the chain of that ``VPSDE`` (equal as
    values), and bad schedule arguments are the VPSDE's errors."""
    assert sde_lib.DiscreteVPSDE(beta_min=0.2, beta_max=10.0, N=50, T=2.0) == \
        sde_lib.DiscreteVPSDE.from_sde(sde_lib.VPSDE(0.2, 10.0, N=50, T=2.0))
    with pytest.raises(ValueError, match="beta_min must be a positive real number"):
        sde_lib.DiscreteVPSDE(beta_min=-1.0)
