"""The fast samplers (DPM-Solver++, UniPC, EDM) against exact solutions: convergence orders on
Gaussian data where the probability-flow map is known in closed form, identities with DDIM and
between the EDM samplers, and their options' errors. (Every registered sampler also goes through
the mixture, NFE, jit and pmap tests of ``test_sampling.py``.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from sde_lib import evaluation
from tests._sde_cases import Z

MU, S = 0.7, 0.5  # data N(MU, S^2 I)
EPS = 1e-3


def _gaussian(dim):
    return sde_lib.GaussianMixture(np.ones(1), np.full((1, dim), MU),
                                   (S**2 * np.eye(dim))[None])


def _exact_flow_then_denoise(sde, x_T):
    """The exact probability-flow map T -> eps for Gaussian data (``x_t = alpha_t MU + std_t z``
    with a fixed ``z``), then these samplers' last step eps -> 0, the Tweedie mean ``MU +
    alpha S^2 / std^2 (x - alpha MU)``, in numpy."""
    a, s = (lambda t, i=i: float(sde.marginal_coeffs(jnp.asarray(t))[i]) for i in (0, 1))
    std = lambda t: math.sqrt(a(t) ** 2 * S**2 + s(t) ** 2)  # noqa: E731
    y = a(EPS) * MU + std(EPS) / std(sde.T) * (x_T - a(sde.T) * MU)
    return MU + a(EPS) * S**2 / std(EPS) ** 2 * (y - a(EPS) * MU)


def _errors(sde, method, ks, **options):
    key = jax.random.key(3)
    x_T = np.asarray(sde.prior_sampling(jax.random.split(key)[0], (64, 3)), np.float64)
    exact = _exact_flow_then_denoise(sde, x_T)
    score_fn = _gaussian(3).score_fn(sde)
    out = []
    for k in ks:
        x, _ = sde_lib.sample(key, sde, score_fn, (64, 3), method=method, num_steps=int(k),
                              eps=EPS, **options)
        out.append(np.abs(np.asarray(x, np.float64) - exact).max())
    return np.array(out)


def _slope(ks, errors):
    return -np.polyfit(np.log(ks), np.log(errors), 1)[0]


SLOW = pytest.mark.slow


@pytest.mark.parametrize("sde,method,options,ks,order", [
    pytest.param(sde_lib.VPSDE(), "dpm_solver_pp", {}, (16, 32, 64), 2.0, id="vp-2m"),
    pytest.param(sde_lib.VESDE(), "dpm_solver_pp", {}, (16, 32, 64), 2.0, id="ve-2m",
                 marks=SLOW),
    pytest.param(sde_lib.VPSDE(), "dpm_solver_pp", {"order": 1}, (8, 16, 32, 64), 1.0,
                 id="vp-dpm1", marks=SLOW),
    pytest.param(sde_lib.VPSDE(), "dpm_solver_2s", {}, (8, 16, 32, 64), 2.0, id="vp-2s",
                 marks=SLOW),
    pytest.param(sde_lib.VPSDE(), "unipc", {}, (16, 32, 64), 3.0, id="vp-unipc"),
    pytest.param(sde_lib.VPSDE(), "edm_heun", {}, (32, 64, 128), 2.0, id="vp-edm-heun",
                 marks=SLOW),
    pytest.param(sde_lib.VESDE(), "edm_heun", {}, (32, 64, 128), 2.0, id="ve-edm-heun",
                 marks=SLOW),
])
def test_convergence_order(sde, method, options, ks, order):
    """Largest error against the closed-form flow (64 draws in d = 3); the fitted slope in K is
    the method's order within 0.15 (DPM-Solver++(2M) and 2S: 2, UniPC (UniP-2 with UniC): 3,
    EDM's Heun: 2, DPM-Solver-1: 1), the errors falling at every K."""
    errors = _errors(sde, method, ks, **options)
    slope = _slope(ks, errors)
    assert np.all(np.diff(errors) < 0) and abs(slope - order) < 0.15, (errors, slope)


@SLOW
def test_dpm_solver_3m_order():
    """DPM-Solver++(3M) with its lower-order warm-up and diffusers' ``lower_order_final``
    (the default): third order while the warm-up's error is small (local slope 4.0 from 8 to 16
    steps, fitted 2.94 over 8-64; the same with ``lower_order_final="always"``), tending to 2
    (the first, first-order step's local error is O(h^2): 2.3 from 32 to 64); below 2M at every
    K."""
    ks = (8, 16, 32, 64)
    errors = _errors(sde_lib.VPSDE(), "dpm_solver_pp", ks, order=3)
    local = -np.diff(np.log(errors)) / np.log(2)
    assert abs(_slope(ks, errors) - 3.0) < 0.15 and local[0] > 3.5 and local[-1] > 2.0, local
    second = _errors(sde_lib.VPSDE(), "dpm_solver_pp", ks[1:])
    assert np.all(errors[1:] < second), (errors, second)


@SLOW
def test_dpm_solver_1_is_ddim():
    """DPM-Solver-1 (order 1) is DDIM with eta = 0 on the same grid, to round-off."""
    sde = sde_lib.VPSDE()
    score_fn = sde_lib.asymmetric_mixture_2d().score_fn(sde)
    for grid in ("uniform", "logsnr"):
        a, _ = sde_lib.sample(jax.random.key(1), sde, score_fn, (64, 2), method="dpm_solver_pp",
                              num_steps=25, order=1, time_grid=grid)
        b, _ = sde_lib.sample(jax.random.key(1), sde, score_fn, (64, 2), method="ddim",
                              num_steps=25, chain=False, time_grid=grid)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@SLOW
def test_edm_stochastic_without_churn_is_edm_heun():
    """``edm_stochastic`` with ``s_churn = 0`` is ``edm_heun`` (to round-off), on VP and VE; with
    churn its samples differ and stay finite."""
    for sde in (sde_lib.VPSDE(), sde_lib.VESDE()):
        score_fn = sde_lib.asymmetric_mixture_2d().score_fn(sde)
        kw = dict(num_steps=20)
        a, _ = sde_lib.sample(jax.random.key(2), sde, score_fn, (64, 2), method="edm_heun", **kw)
        b, _ = sde_lib.sample(jax.random.key(2), sde, score_fn, (64, 2),
                              method="edm_stochastic", s_churn=0.0, **kw)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
        c, _ = sde_lib.sample(jax.random.key(2), sde, score_fn, (64, 2),
                              method="edm_stochastic", s_churn=20.0, **kw)
        assert np.all(np.isfinite(np.asarray(c))) and np.abs(np.asarray(c - a)).max() > 1e-2


@SLOW
def test_exact_laws_of_the_fast_samplers():
    """On Gaussian data the exact law of ``sde_lib.evaluation`` (through the steps for 2S and
    EDM's Heun, through the whole map for the multistep ones) has a KL to the data that falls
    with K, and it is the law of the real sampler: 200,000 samples have its mean and variance
    within Z standard errors; the stochastic EDM sampler (with churn) is refused."""
    mean, var = jnp.array([0.7, -1.2]), jnp.array([0.25, 0.04])
    data = evaluation.GaussianLaw(mean, var)
    sde = sde_lib.VPSDE()
    n = 200_000
    for method, options in (("dpm_solver_2s", {}), ("edm_heun", {}), ("dpm_solver_pp", {}),
                            ("dpm_solver_pp", {"order": 3}), ("unipc", {})):
        laws = [evaluation.gaussian_sampler_law(sde, mean, var, method, k, **options)
                for k in (5, 20, 80)]
        kls = [float(evaluation.gaussian_kl(law, data)) for law in laws]
        assert kls[0] > kls[1] > kls[2] and kls[2] < 1e-3, (method, kls)
        x, _ = sde_lib.sample(jax.random.key(5), sde, evaluation.gaussian_score_fn(sde, mean, var),
                              (n, 2), method=method, num_steps=5, **options)
        x = np.asarray(x, np.float64)
        z_mean = (x.mean(0) - laws[0].mean) / np.sqrt(laws[0].var / n)
        z_var = (x.var(0, ddof=1) - laws[0].var) / (laws[0].var * np.sqrt(2 / (n - 1)))
        assert np.all(np.abs(z_mean) < Z) and np.all(np.abs(z_var) < Z), (method, z_mean, z_var)
    with pytest.raises(ValueError, match="must be an affine fixed-step sampler"):
        evaluation.gaussian_sampler_law(sde, mean, var, "edm_stochastic", 10)


@pytest.mark.parametrize("method,options,match", [
    ("dpm_solver_pp", {"order": 4}, "order must be 1, 2 or 3"),
    ("edm_stochastic", {"s_churn": -1.0}, "s_churn must be a real number >= 0"),
    ("edm_stochastic", {"s_noise": 0.0}, "s_noise must be a positive real number"),
    ("unipc", {"time_grid": "cosine"}, "time_grid must be one of"),
    ("edm_heun", {"eta": 0.0}, r"unknown options \['eta'\] for method 'edm_heun'"),
])
def test_bad_options(method, options, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.sample(jax.random.key(0), sde_lib.VPSDE(), lambda x, t: -x, (4, 2),
                       method=method, num_steps=10, **options)


def test_projection_refuses_a_multistep_method():
    with pytest.raises(ValueError, match="needs a one-state method"):
        sde_lib.conditional_sample(jax.random.key(0), sde_lib.VPSDE(), lambda x, t: -x, (4, 2),
                                   jnp.array([[1.0, 0.0]]), jnp.array([0.5]),
                                   method="unipc", num_steps=10)
