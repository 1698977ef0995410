"""Porting without surprises (issue 27).

``dpm_solver_pp`` (2M, 3M) and ``unipc`` against numpy transcriptions, written here, of
diffusers' ``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler`` (``set_timesteps`` and
``step``; float64, 1e-10) for every spacing and both final sigmas, and k-diffusion's Karras
sigmas, Euler, Heun and DPM++(2M) samplers; ``edm_stochastic`` without
churn is ``edm_heun`` under ``jit`` in float32, and with churn equals a float64 run of the same
noise to float32 round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import sde_lib
from sde_lib import losses
from sde_lib.sampling import build_sampler, grid, multistep, scan_steps

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


# ---------------------------------------------------------------- diffusers' multistep schedulers
N = 1000
TOL = dict(rtol=1e-10, atol=1e-12)


def eps_net(x, t):
    """A fixed nonlinear 'network' predicting eps from (x, t); numpy and jax alike."""
    lib = jnp if isinstance(x, jax.Array) else np
    out = lib.tanh(0.7 * x + 0.3 * lib.roll(x, 1, axis=1) + 2.0 * t[:, None] - 1.0)
    return out


def _alphas_cumprod(n=N):
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, n))


def _karras(sigmas_increasing, K, rho=7.0):
    """``_convert_to_karras``: ``sigma_min, sigma_max`` the chain's smallest and largest."""
    s_min, s_max = sigmas_increasing[0], sigmas_increasing[-1]
    ramp = np.linspace(0, 1, K)
    return (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def _sigma_to_t(sigma, log_sigmas):
    """``_sigma_to_t``: the index interpolated in ``log sigma`` between the chain's."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def diffusers_multistep_set_timesteps(K, spacing, final_sigmas_type, karras=False, n=N):
    """``DPMSolverMultistepScheduler.set_timesteps`` (= ``UniPCMultistepScheduler``'s;
    ``steps_offset = 0``, ``lambda_min_clipped = -inf`` so ``last_timestep = N``), in float64
    (diffusers casts the sigmas to float32). Returns ``(timesteps, sigmas)``, ``K`` and ``K + 1``
    entries."""
    ab = _alphas_cumprod(n)
    if spacing == "linspace":
        timesteps = np.linspace(0, n - 1, K + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        step_ratio = n // (K + 1)
        timesteps = (np.arange(0, K + 1) * step_ratio).round()[::-1][:-1].astype(np.int64)
    else:  # trailing
        timesteps = np.arange(n, 0, -n / K).round().astype(np.int64) - 1
    sigmas = np.sqrt((1 - ab) / ab)
    log_sigmas = np.log(sigmas)
    if karras:
        sigmas = _karras(sigmas, K)
        timesteps = np.array([_sigma_to_t(s, log_sigmas) for s in sigmas]).round().ravel()
        sigma_last = sigmas[-1] if final_sigmas_type == "sigma_min" else 0.0
    else:
        sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        sigma_last = (np.sqrt((1 - ab[0]) / ab[0]) if final_sigmas_type == "sigma_min"
                      else 0.0)
    return timesteps, np.concatenate([sigmas, [sigma_last]])


def _alpha_sigma(sigma):
    """``_sigma_to_alpha_sigma_t``: ``alpha = 1 / sqrt(sigma^2 + 1)``, ``sigma_t = sigma
    alpha``."""
    alpha = 1.0 / np.sqrt(sigma**2 + 1.0)
    return alpha, sigma * alpha


def _lam(sigma):
    alpha, sigma_t = _alpha_sigma(sigma)
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(sigma_t)


def diffusers_dpm_solver_pp(x, K, spacing, order, final_sigmas_type, karras=False,
                            net_times=None):
    """``DPMSolverMultistepScheduler`` (``algorithm_type="dpmsolver++"``, ``solver_type=
    "midpoint"``, ``lower_order_final=True``, ``euler_at_final=False``, eps prediction): the
    ``step`` loop. The network sees ``t = (tau + 1) / N`` of each timestep ``tau``, or
    ``net_times[k]`` where given (the library's continuous times on a Karras grid)."""
    timesteps, sigmas = diffusers_multistep_set_timesteps(K, spacing, final_sigmas_type, karras)
    n_ts = len(timesteps)
    outputs, lower_order_nums = [None] * order, 0
    for i in range(n_ts):
        lower_final = i == n_ts - 1 and (n_ts < 15 or final_sigmas_type == "zero")
        lower_second = i == n_ts - 2 and n_ts < 15
        t_net = (timesteps[i] + 1) / N if net_times is None else net_times[i]
        eps = eps_net(x, np.full(x.shape[0], t_net))
        alpha_s0, sigma_s0 = _alpha_sigma(sigmas[i])
        m0 = (x - sigma_s0 * eps) / alpha_s0
        outputs = outputs[1:] + [m0]
        alpha_t, sigma_t = _alpha_sigma(sigmas[i + 1])
        lam_t, lam_s0 = _lam(sigmas[i + 1]), _lam(sigmas[i])
        h = lam_t - lam_s0
        if order == 1 or lower_order_nums < 1 or lower_final:
            x = (sigma_t / sigma_s0) * x - alpha_t * (np.exp(-h) - 1.0) * m0
        elif order == 2 or lower_order_nums < 2 or lower_second:
            m1 = outputs[-2]
            with np.errstate(divide="ignore"):  # h = 0: a zero-length last step, D1 = 0
                r0 = (lam_s0 - _lam(sigmas[i - 1])) / h
            d1 = (m0 - m1) / r0
            x = ((sigma_t / sigma_s0) * x - alpha_t * (np.exp(-h) - 1.0) * m0
                 - 0.5 * alpha_t * (np.exp(-h) - 1.0) * d1)
        else:
            m1, m2 = outputs[-2], outputs[-3]
            lam_s1, lam_s2 = _lam(sigmas[i - 1]), _lam(sigmas[i - 2])
            r0, r1 = (lam_s0 - lam_s1) / h, (lam_s1 - lam_s2) / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = ((sigma_t / sigma_s0) * x - alpha_t * (np.exp(-h) - 1.0) * m0
                 + alpha_t * ((np.exp(-h) - 1.0) / h + 1.0) * d1
                 - alpha_t * ((np.exp(-h) - 1.0 + h) / h**2 - 0.5) * d2)
        lower_order_nums = min(lower_order_nums + 1, order)
    return x


def _library_grid(spacing, karras):
    """The library's name for a spacing of the multistep schedulers, and ``eps``."""
    if karras:
        return "karras", 1.0 / N
    return {"linspace": "linspace_multistep", "leading": "leading_multistep",
            "trailing": "trailing"}[spacing], 1e-3


def _run_library(method, K, x_T, **options):
    sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=N)
    score_fn = losses.get_model_score_fn(eps_net, sde, sde_lib.get_parameterization("eps"))
    step, coeffs, _ = build_sampler(sde, score_fn, method, K, **options)
    return np.asarray(scan_steps(step, jax.random.key(0), jnp.asarray(x_T), coeffs)), coeffs


SPACINGS = [("linspace", False), ("leading", False), ("trailing", False), ("linspace", True)]
SPACING_IDS = ["linspace", "leading", "trailing", "karras"]


@pytest.mark.parametrize("final", ["zero", pytest.param("sigma_min", marks=pytest.mark.slow)])
@pytest.mark.parametrize("K", [10, pytest.param(20, marks=pytest.mark.slow)])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("spacing,karras", SPACINGS, ids=SPACING_IDS)
def test_dpm_solver_pp_is_dpm_solver_multistep_scheduler(spacing, karras, order, K, final):
    """``dpm_solver_pp`` on ``DiscreteVPSDE`` with the scheduler's spacing by name, ``order``
    and ``final_sigma`` (defaults otherwise) is ``DPMSolverMultistepScheduler`` with that
    ``timestep_spacing`` (or ``use_karras_sigmas``), ``solver_order`` and
    ``final_sigmas_type``, its other defaults, to 1e-10 in float64 on a nonlinear eps network.
    On the Karras grid the network sees the library's continuous times (diffusers feeds it
    ``round(tau(sigma))``)."""
    x_T = 1.3 * np.random.default_rng(1).normal(size=(B, D))
    time_grid, eps = _library_grid(spacing, karras)
    got, coeffs = _run_library("dpm_solver_pp", K, x_T, order=order, time_grid=time_grid,
                               eps=eps, final_sigma=final)
    net_times = np.asarray(coeffs.t) if karras else None
    want = diffusers_dpm_solver_pp(x_T, K, spacing, order, final, karras, net_times)
    if karras and final == "sigma_min" and order == 3 and K >= 15:
        # diffusers' 3M divides 0 by 0 on its zero-length last step (its Karras grid already
        # ends at sigma_min): NaN there; the library's zero-length step returns x unchanged
        assert np.all(np.isnan(want)) and np.all(np.isfinite(got))
        return
    np.testing.assert_allclose(got, want, **TOL)


def _bh2_b(h):
    """UniPC's ``b`` for ``bh2`` (``B(h) = expm1(-h)``), two entries: ``b_i = i! phi_i / B``."""
    hh = -h
    b_h = np.expm1(hh)
    phi_1 = b_h / hh - 1.0
    phi_2 = phi_1 / hh - 0.5
    return np.array([phi_1 / b_h, 2.0 * phi_2 / b_h]), b_h


def diffusers_unipc(x, K, spacing, final_sigmas_type, karras=False, net_times=None):
    """``UniPCMultistepScheduler`` (``solver_order=2``, ``solver_type="bh2"``,
    ``predict_x0=True``, ``lower_order_final=True``, no ``disable_corrector``, eps
    prediction): ``step`` = UniC of the last sample with the new output, then UniP."""
    order = 2
    timesteps, sigmas = diffusers_multistep_set_timesteps(K, spacing, final_sigmas_type, karras)
    n_ts = len(timesteps)
    outputs, last_sample, this_order, lower_order_nums = [None] * order, None, 0, 0
    for i in range(n_ts):
        t_net = (timesteps[i] + 1) / N if net_times is None else net_times[i]
        eps = eps_net(x, np.full(x.shape[0], t_net))
        alpha, sigma_t = _alpha_sigma(sigmas[i])
        model_t = (x - sigma_t * eps) / alpha
        if i > 0:  # UniC from sigmas[i - 1] to sigmas[i], at the last predictor's order
            m0 = outputs[-1]
            alpha_s0, sigma_s0 = _alpha_sigma(sigmas[i - 1])
            h = _lam(sigmas[i]) - _lam(sigmas[i - 1])
            b, b_h = _bh2_b(h)
            x_t_ = sigma_t / sigma_s0 * last_sample - alpha * np.expm1(-h) * m0
            if this_order == 1:
                corr = 0.5 * (model_t - m0)
            else:
                rk = (_lam(sigmas[i - 2]) - _lam(sigmas[i - 1])) / h
                rhos_c = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), b)
                corr = rhos_c[0] * (outputs[-2] - m0) / rk + rhos_c[1] * (model_t - m0)
            x = x_t_ - alpha * b_h * corr
        outputs = outputs[1:] + [model_t]
        this_order = min(min(order, n_ts - i), lower_order_nums + 1)
        last_sample = x
        # UniP from sigmas[i] to sigmas[i + 1]
        alpha_t, sigma_next = _alpha_sigma(sigmas[i + 1])
        h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
        x_t_ = sigma_next / sigma_t * x - alpha_t * np.expm1(-h) * model_t
        if this_order == 2:
            rk = (_lam(sigmas[i - 1]) - _lam(sigmas[i])) / h
            x_t_ = x_t_ - alpha_t * np.expm1(-h) * 0.5 * (outputs[-2] - model_t) / rk
        x = x_t_
        lower_order_nums = min(lower_order_nums + 1, order)
    return x


@pytest.mark.parametrize("final", ["zero", pytest.param("sigma_min", marks=pytest.mark.slow)])
@pytest.mark.parametrize("K", [10, pytest.param(20, marks=pytest.mark.slow)])
@pytest.mark.parametrize("spacing,karras", SPACINGS, ids=SPACING_IDS)
def test_unipc_is_unipc_multistep_scheduler(spacing, karras, K, final):
    """``unipc`` on ``DiscreteVPSDE`` with the scheduler's spacing by name and ``final_sigma``
    is ``UniPCMultistepScheduler`` (bh2, order 2, its defaults otherwise) to 1e-10 in float64;
    on the Karras grid the network sees the library's continuous times."""
    x_T = 1.3 * np.random.default_rng(2).normal(size=(B, D))
    time_grid, eps = _library_grid(spacing, karras)
    got, coeffs = _run_library("unipc", K, x_T, time_grid=time_grid, eps=eps, final_sigma=final)
    net_times = np.asarray(coeffs.t) if karras else None
    want = diffusers_unipc(x_T, K, spacing, final, karras, net_times)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_multistep_spacings_are_the_schedulers_timesteps(spacing):
    """``time_grid="linspace_multistep"``/``"leading_multistep"``/``"trailing"`` evaluate at
    ``t = (tau + 1) T / N`` of ``DPMSolverMultistepScheduler``'s timesteps ``tau``, for several
    K and a chain of another N and T; at K = 10 of N = 1000 the last is 100, 90, 99."""
    name = _library_grid(spacing, False)[0]
    for n, T, K in [(1000, 1.0, 10), (1000, 1.0, 20), (1000, 1.0, 7), (1000, 1.0, 999),
                    (300, 2.0, 40)]:
        sde = sde_lib.DiscreteVPSDE(beta_min=0.1, beta_max=20.0, N=n, T=T)
        tau = diffusers_multistep_set_timesteps(K, spacing, "zero", n=n)[0]
        got = grid.evaluation_times(name, K, sde, 1e-3)
        np.testing.assert_allclose(got, (tau + 1) * T / n, rtol=1e-15)
    assert diffusers_multistep_set_timesteps(10, spacing, "zero")[0][-1] == \
        {"linspace": 100, "leading": 90, "trailing": 99}[spacing]


def test_step_orders():
    """The per-step orders of ``lower_order_final``: diffusers' rule lowers the last two steps
    only below 15 steps; ``"always"`` at every K; the last step to sigma = 0 is first order."""
    orders = lambda *a: list(multistep.step_orders(*a))  # noqa: E731
    assert orders(3, 6, True, "zero") == [1, 2, 3, 3, 2, 1]
    assert orders(3, 15, True, "zero")[-3:] == [3, 3, 1]
    assert orders(3, 15, "always", "zero")[-3:] == [3, 2, 1]
    assert orders(3, 15, True, "sigma_min")[-3:] == [3, 3, 3]
    assert orders(3, 6, False, "zero") == [1, 2, 3, 3, 3, 1]
    assert orders(2, 20, True, "zero") == orders(2, 20, "always", "zero")


@pytest.mark.parametrize("method,options,match", [
    ("dpm_solver_pp", {"final_sigma": "min"}, r"final_sigma must be one of \('zero'"),
    ("unipc", {"final_sigma": 0}, r"final_sigma must be one of"),
    ("dpm_solver_pp", {"lower_order_final": "yes"}, "lower_order_final must be True, False"),
    ("dpm_solver_pp", {"lower_order_final": 1}, "lower_order_final must be True, False"),
    ("unipc", {"lower_order_final": True}, r"unknown options \['lower_order_final'\]"),
    ("unipc", {"timestep_rounding": 1}, "timestep_rounding must be True or False"),
    ("dpm_solver_pp", {"final_sigma": "sigma_min", "eps": 1e-4},
     r"steps to t = T / N = 0.001; the grid's last time 0.0001 is below it"),
    ("dpm_solver_pp", {"time_grid": "leading_multistep", "num_steps": 1000},
     r"needs num_steps <= N - 1 = 999"),
])
def test_bad_porting_options(method, options, match):
    sde = sde_lib.DiscreteVPSDE(N=N)
    options = {"num_steps": 10, **options}
    with pytest.raises(ValueError, match=match):
        sde_lib.sample(jax.random.key(0), sde, lambda x, t: -x, (4, 2), method=method,
                       **options)


@pytest.mark.parametrize("method,order", [("dpm_solver_pp", 2), ("dpm_solver_pp", 3),
                                          ("unipc", 2)])
@pytest.mark.parametrize("K", [10, pytest.param(20, marks=pytest.mark.slow)])
def test_timestep_rounding_is_diffusers_karras(method, order, K):
    """``timestep_rounding=True`` on the Karras grid: the network sees diffusers' rounded
    timesteps ``round(tau(sigma))`` (``grid.rounded_chain_times`` equals them) while the solver
    keeps the Karras sigmas, so both schedulers with ``use_karras_sigmas=True`` are reproduced
    to 1e-10, the network's own input included; without it the network's time differs."""
    x_T = 1.3 * np.random.default_rng(3).normal(size=(B, D))
    options = {"order": order} if method == "dpm_solver_pp" else {}
    got, coeffs = _run_library(method, K, x_T, time_grid="karras", eps=1.0 / N,
                               timestep_rounding=True, **options)
    tau = diffusers_multistep_set_timesteps(K, "linspace", "zero", karras=True)[0]
    np.testing.assert_allclose(np.asarray(coeffs.t_net), (tau + 1) / N, rtol=1e-15)
    assert np.abs(np.asarray(coeffs.t) - (tau + 1) / N).max() > 1e-4
    want = (diffusers_dpm_solver_pp(x_T, K, "linspace", order, "zero", karras=True)
            if method == "dpm_solver_pp" else diffusers_unipc(x_T, K, "linspace", "zero", True))
    np.testing.assert_allclose(got, want, **TOL)


# ---------------------------------------------------------------- k-diffusion, transcribed
def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's ``get_sigmas_karras``: ``n`` Karras sigmas and a final 0."""
    ramp = np.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return np.append((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho, 0.0)


def k_diffusion_sample(name, model, x, sigmas):
    """k-diffusion's ``sample_euler``, ``sample_heun`` (no churn) and ``sample_dpmpp_2m``;
    ``model(x, i)`` is the denoiser at ``sigmas[i]``."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, i)
        if name == "dpmpp_2m":
            t, t_next = -np.log(sigmas[i]), -np.log(sigmas[i + 1]) if sigmas[i + 1] else np.inf
            h = t_next - t
            if old_denoised is None or sigmas[i + 1] == 0:
                x = np.exp(-t_next) / np.exp(-t) * x - np.expm1(-h) * denoised
            else:
                r = (t + np.log(sigmas[i - 1])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
                x = np.exp(-t_next) / np.exp(-t) * x - np.expm1(-h) * denoised_d
            old_denoised = denoised
            continue
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if name == "euler" or sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, i + 1)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@pytest.mark.parametrize("K", [10, pytest.param(20, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name,method,options", [
    ("euler", "dpm_solver_pp", {"order": 1}), ("heun", "edm_heun", {}),
    ("dpmpp_2m", "dpm_solver_pp", {})])
def test_k_diffusion_samplers(name, method, options, K):
    """k-diffusion's Euler, Heun and DPM++(2M) on ``get_sigmas_karras(K, r(eps), r(T))`` are
    ``dpm_solver_pp(order=1)``, ``edm_heun`` and ``dpm_solver_pp`` with ``time_grid="karras"``
    on the continuous VP SDE, in k-diffusion's variables ``x~ = x / alpha``, ``sigma~ = sigma /
    alpha`` (1e-10, float64; the denoiser is the eps network's at the library's grid time of each
    sigma)."""
    sde, eps = sde_lib.VPSDE(), 1e-3
    score_fn = losses.get_model_score_fn(eps_net, sde, sde_lib.get_parameterization("eps"))
    step, coeffs, _ = build_sampler(sde, score_fn, method, K, eps=eps, time_grid="karras",
                                    **options)
    x_T = np.random.default_rng(4).normal(size=(B, D)) * float(sde.marginal_coeffs(
        jnp.asarray(1.0))[1])
    got = np.asarray(scan_steps(step, jax.random.key(0), jnp.asarray(x_T), coeffs))

    t = np.asarray(coeffs.t)
    alpha, sigma = (np.asarray(v, np.float64) for v in sde.marginal_coeffs(jnp.asarray(t)))
    ends = [np.asarray(v, np.float64) for v in sde.marginal_coeffs(jnp.array([eps, 1.0]))]
    r_min, r_max = ends[1] / ends[0]
    sigmas = get_sigmas_karras(K, r_min, r_max)
    np.testing.assert_allclose(sigmas[:-1], sigma / alpha, rtol=1e-12)

    def model(x_tilde, i):  # the eps network as k-diffusion's denoiser D(x~, sigma~_i)
        x = alpha[i] * x_tilde
        return (x - sigma[i] * eps_net(x, np.full(B, t[i]))) / alpha[i]

    want = k_diffusion_sample(name, model, x_T / alpha[0], sigmas)
    np.testing.assert_allclose(got, want, **TOL)
