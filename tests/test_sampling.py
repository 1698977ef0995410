"""Samplers against the exact mixture score: moments, weights, a two-sample test, convergence
orders on Gaussian data (exact solutions), identities between methods, NFE, jit/pmap, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import spatial, stats

import sde_lib
from sde_lib.sampling import ancestral, grid
from tests._sde_cases import SDES, Z

ALL = tuple(sde_lib.SAMPLERS)
MIXTURE = sde_lib.asymmetric_mixture_2d()


def _sample(sde, method, n, num_steps, seed=0, score_fn=None, **options):
    score_fn = score_fn or MIXTURE.score_fn(sde)
    run = jax.jit(lambda key: sde_lib.sample(key, sde, score_fn, (n, 2), method=method,
                                             num_steps=num_steps, **options))
    x, nfe = run(jax.random.key(seed))
    return np.asarray(x), int(nfe)


def _component(x):
    """Most responsible mixture component of each row (scipy densities, independent of gmm)."""
    logp = np.stack([np.log(w) + stats.multivariate_normal(m, c).logpdf(x) for w, m, c in
                     zip(np.asarray(MIXTURE.weights), np.asarray(MIXTURE.means),
                         np.asarray(MIXTURE.covs), strict=True)], axis=1)
    return np.argmax(logp, axis=1)


def _mmd(x, y, bandwidths=(0.2, 0.5, 1.0)):
    """Squared MMD (Gretton et al. 2012, biased V-statistic) with a sum of Gaussian kernels at
    the scales of the mixture's components and of its spread."""
    d = functools.partial(spatial.distance.cdist, metric="sqeuclidean")
    dxx, dyy, dxy = d(x, x), d(y, y), d(x, y)
    k = lambda d2, h: np.exp(-d2 / (2 * h * h)).mean()  # noqa: E731
    return sum(k(dxx, h) + k(dyy, h) - 2 * k(dxy, h) for h in bandwidths)


@functools.cache
def _exact_reference(n):
    """Exact samples and the null law of the MMD between two independent exact sets of size n:
    its maximum over 50 replicates (about the 98% quantile)."""
    exact = np.asarray(MIXTURE.sample(jax.random.key(100), n))
    null = [_mmd(np.asarray(MIXTURE.sample(jax.random.key(200 + 2 * r), n)),
                 np.asarray(MIXTURE.sample(jax.random.key(201 + 2 * r), n)))
            for r in range(50)]
    return exact, max(null)


CASES = [("vp", m) for m in ALL] + [("ve", m) for m in ALL] + [
    ("subvp", "euler_maruyama"), ("subvp", "ddim"), ("subvp", "ddpm_ancestral"),
    ("cosine", "ddpm_ancestral"), ("cosine", "pf_ode_adaptive"),
    ("ou", "euler_maruyama"), ("ou", "pf_ode_heun"), ("ou", "reverse_diffusion")]
# (Brownian motion is left out: its prior N(0, sigma^2 T I) is not p_T, which keeps the data.)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name,method", CASES)
def test_sampler_reproduces_mixture(sde_name, method):
    """Mean, covariance and component weights within Z standard errors of the oracle's, and the
    MMD to exact samples below the maximum of 50 null replicates."""
    n = 2000
    sde = SDES[sde_name]()
    x, _ = _sample(sde, method, n, num_steps=500)
    assert np.all(np.isfinite(x))
    exact, null_max = _exact_reference(n)
    mean, cov = np.asarray(MIXTURE.mean()), np.asarray(MIXTURE.covariance())
    # mean: se = sqrt(C_jj / n); covariance entries: se from the exact fourth moments
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), Z * np.sqrt(np.diag(cov) / n))
    c = exact - exact.mean(0)
    prod = c[:, :, None] * c[:, None, :]
    se_cov = prod.std(0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), Z * se_cov * math.sqrt(2))
    # component weights: two-sample difference of proportions
    p_x = np.bincount(_component(x), minlength=3) / n
    p_e = np.bincount(_component(exact), minlength=3) / n
    se = np.sqrt(p_e * (1 - p_e) * 2 / n)
    np.testing.assert_array_less(np.abs(p_x - p_e), Z * se)
    stat = _mmd(x, exact)
    assert stat < null_max, f"{method}: MMD {stat:.5f} > null max {null_max:.5f}"


@pytest.mark.slow
def test_two_sample_check_detects_a_wrong_sampler():
    """The MMD check has power: extra noise of std 0.45 (component variances 0.2-0.8 grow by
    0.2) fails it."""
    n = 2000
    exact, null_max = _exact_reference(n)
    wrong = np.asarray(MIXTURE.sample(jax.random.key(5), n))
    wrong = wrong + 0.45 * np.asarray(jax.random.normal(jax.random.key(6), (n, 2)))
    assert _mmd(wrong, exact) > 2 * null_max


# ----- Gaussian data: exact solutions and convergence orders ------------------------------------

MU, S = 0.7, 0.5  # data N(MU, S^2 I)


def _gaussian(dim):
    return sde_lib.GaussianMixture(np.ones(1), np.full((1, dim), MU),
                                   (S**2 * np.eye(dim))[None])


def _exact_flow_then_euler(sde, x_T, eps):
    """The exact probability-flow map T -> eps for Gaussian data (x_t = alpha_t MU + std_t z
    with a fixed z), then the sampler's last Euler step eps -> 0, written out in numpy."""
    a = lambda t: float(sde.marginal_coeffs(jnp.asarray(t))[0])  # noqa: E731
    s = lambda t: float(sde.marginal_coeffs(jnp.asarray(t))[1])  # noqa: E731
    std = lambda t: math.sqrt(a(t) ** 2 * S**2 + s(t) ** 2)  # noqa: E731
    y = a(eps) * MU + std(eps) / std(sde.T) * (x_T - a(sde.T) * MU)
    f = float(sde.drift_coeff(jnp.asarray(eps)))
    g2 = float(sde.diffusion_coeff(jnp.asarray(eps))) ** 2
    score = -(y - a(eps) * MU) / std(eps) ** 2
    return y - eps * (f * y - 0.5 * g2 * score)


def _slope(ks, errors):
    return -np.polyfit(np.log(ks), np.log(errors), 1)[0]


@pytest.mark.parametrize("method,order", [pytest.param("pf_ode_euler", 1.0, marks=pytest.mark.slow),
                                          ("pf_ode_heun", 2.0), ("ddim", 1.0)])
def test_ode_convergence_order(method, order):
    """Error against the exact flow at K = 16..128 steps; fitted slope within 0.25 of the order
    (DDIM with eta = 0 on the exact marginals is a first-order integrator of the same ODE)."""
    sde, eps = sde_lib.VPSDE(), 1e-3
    score_fn = _gaussian(3).score_fn(sde)
    key = jax.random.key(3)
    x_T = np.asarray(sde.prior_sampling(jax.random.split(key)[0], (64, 3)))
    exact = _exact_flow_then_euler(sde, x_T, eps)
    ks = np.array([16, 32, 64, 128])
    options = {"chain": False} if method == "ddim" else {}
    errors = []
    for k in ks:
        x, _ = sde_lib.sample(key, sde, score_fn, (64, 3), method=method, num_steps=int(k),
                              eps=eps, **options)
        errors.append(np.abs(np.asarray(x) - exact).max())
    slope = _slope(ks, errors)
    print(f"{method}: errors {np.array(errors)}, fitted order {slope:.2f}")
    assert abs(slope - order) < 0.25, (errors, slope)
    assert np.all(np.diff(errors) < 0), errors


@pytest.mark.slow
def test_euler_maruyama_weak_order_one():
    """Weak error |Var(x) - S^2| of Euler-Maruyama on Gaussian data at K = 64 .. 512 (below
    K ~ 50, beta_max h is not small and the error is pre-asymptotic), from the exact law of its
    samples (``gaussian_sampler_law``: its own step pushed through the Gaussian's moments, in
    float64, so no Monte Carlo error): the fitted slope is within 0.2 of 1 and each doubling
    of K divides the error by 1.8-2.5. Tied to the sampler's draws at K = 64: 100,000 x 8
    samples' variance within Z standard errors (S_K^2 sqrt(2 / n)) of the law's."""
    sde = sde_lib.VPSDE()
    ks = np.array([64, 128, 256, 512])
    with jax.enable_x64(True):
        laws = [sde_lib.gaussian_sampler_law(sde, np.full(8, MU), S**2, "euler_maruyama",
                                             int(k)) for k in ks]
    var = np.array([np.asarray(law.var) for law in laws])
    errors = np.abs(var - S**2).max(1)
    slope = _slope(ks, errors)
    print(f"euler_maruyama: weak errors {errors}, fitted order {slope:.2f}")
    assert abs(slope - 1.0) < 0.2, (errors, slope)
    assert np.all((errors[:-1] / errors[1:] > 1.8) & (errors[:-1] / errors[1:] < 2.5)), errors
    n = 100_000
    x, _ = sde_lib.sample(jax.random.key(4), sde, _gaussian(8).score_fn(sde), (n, 8),
                          method="euler_maruyama", num_steps=int(ks[0]))
    drawn = float(jnp.var(x, axis=0, ddof=1).mean())
    assert abs(drawn - var[0].mean()) < Z * var[0].mean() * math.sqrt(2 / (8 * n)), (drawn, var[0])
    assert errors[0] > 5 * var[0].mean() * math.sqrt(2 / (8 * n))  # the error is resolved


@pytest.mark.slow
def test_ancestral_and_reverse_diffusion_agree_to_first_order():
    """With the same key, Ho's ancestral step (variance beta) and the reverse of the DDPM step
    differ by O(beta_i^2) per step; over N steps the paths differ by O(1/N): slope 1 in N. On the
    chain SDE; Gaussian data, so that a small difference cannot switch a path between modes."""
    ns = np.array([250, 500, 1000, 2000])
    diffs = []
    for n in ns:
        sde = sde_lib.DiscreteVPSDE(N=int(n))
        score_fn = _gaussian(2).score_fn(sde)
        xa, _ = _sample(sde, "ddpm_ancestral", 256, int(n), score_fn=score_fn, variance="beta")
        xr, _ = _sample(sde, "reverse_diffusion", 256, int(n), score_fn=score_fn)
        diffs.append(np.abs(xa - xr).max())
    slope = _slope(ns, diffs)
    print(f"ancestral vs reverse diffusion: {np.array(diffs)}, slope {slope:.2f}")
    assert abs(slope - 1.0) < 0.25 and diffs[-1] < 0.01, (diffs, slope)


@pytest.mark.slow  # the fast tier's ancestral check: test_parity (diffusers' step)
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ancestral_step_is_hos_algorithm_2(variance):
    """One chain step of the generalized step equals DDPMChain.ancestral_step (Ho et al. 2020,
    Algorithm 2, written separately in ddpm.py) with the same key, on the chain SDE."""
    sde = sde_lib.DiscreteVPSDE()
    chain = sde_lib.DDPMChain.from_sde(sde)
    score_fn = MIXTURE.score_fn(sde)
    times = grid.evaluation_times("uniform", 50, sde, sde.T / sde.N)
    coeffs = grid.chain_grid(sde, times)
    k = 20
    c = jax.tree.map(lambda a: a[k], coeffs)
    i = int(round(float(c.t) * sde.N)) - 1
    x = MIXTURE.marginal(sde, float(c.t)).sample(jax.random.key(1), 16)
    key = jax.random.key(2)
    eps_hat = -float(c.sigma) * score_fn(x, jnp.full((16,), c.t))
    # the sub-chain step from index i to the next grid index uses the sub-chain's betas
    j = int(round(float(c.t_next) * sde.N)) - 1
    sub = sde_lib.DDPMChain(1.0 - chain.alphas_cumprod[jnp.array([j, i])]
                            / jnp.concatenate([jnp.ones(1), chain.alphas_cumprod[jnp.array([j])]]))
    noise = {"beta": lambda v, b2: b2, "beta_tilde": lambda v, b2: v}[variance]
    got, _ = ancestral.generalized_ddim(key, x, c, score_fn=score_fn, eps_scale="posterior",
                                        noise_scale=noise)
    want = sub.ancestral_step(key, x, jnp.ones((16,), jnp.int32), eps_hat, variance)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-10)


def test_ddim_eta_one_is_ancestral_beta_tilde():
    sde = SDES["ve"]()
    a, _ = _sample(sde, "ddim", 64, 40, eta=1.0)
    b, _ = _sample(sde, "ddpm_ancestral", 64, 40, variance="beta_tilde")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


# ----- NFE, shapes, jit and pmap ----------------------------------------------------------------

@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow)
                                    if m == "pf_ode_adaptive" else m for m in ALL])
def test_nfe_counts_score_calls(method):
    sde = sde_lib.VPSDE()
    exact = MIXTURE.score_fn(sde)
    calls = []

    def score_fn(x, t):
        jax.debug.callback(lambda t: calls.append(1), t)
        return exact(x, t)

    options = {"corrector_steps": 2} if method == "pc" else {}
    x, nfe = sde_lib.sample(jax.random.key(0), sde, score_fn, (8, 2), method=method,
                            num_steps=40, **options)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(nfe) == len(calls) > 0, (method, int(nfe), len(calls))


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL)
def test_any_batch_shape_jit_and_pmap(method):
    """Images (B, 2, 3): eager equals jit; under pmap each device's samples equal an eager call
    with that device's key."""
    sde = sde_lib.VESDE(sigma_max=5.0)
    gauss = _gaussian(6)
    flat = gauss.score_fn(sde)

    def score_fn(x, t):
        return flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)

    kw = dict(sde=sde, score_fn=score_fn, method=method, num_steps=30)
    key = jax.random.key(7)
    x, _ = sde_lib.sample(key, shape=(5, 2, 3), **kw)
    x_jit, _ = jax.jit(lambda k: sde_lib.sample(k, shape=(5, 2, 3), **kw))(key)
    assert x.shape == (5, 2, 3) and np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(x_jit), np.asarray(x), rtol=1e-6, atol=1e-6)
    n_dev = jax.local_device_count()
    keys = jax.random.split(key, n_dev)
    x_pmap = jax.pmap(lambda k: sde_lib.sample(k, shape=(3, 2, 3), **kw)[0])(keys)
    assert x_pmap.shape == (n_dev, 3, 2, 3)
    x1, _ = sde_lib.sample(keys[1], shape=(3, 2, 3), **kw)
    np.testing.assert_allclose(np.asarray(x_pmap[1]), np.asarray(x1), rtol=1e-6, atol=1e-6)


def test_time_grids():
    sde = sde_lib.VPSDE()
    t = grid.evaluation_times("uniform", 5, sde, 0.2)
    np.testing.assert_allclose(t, [1.0, 0.8, 0.6, 0.4, 0.2])
    t = grid.evaluation_times("quadratic", 3, sde, 0.0)
    np.testing.assert_allclose(t, [1.0, 0.25, 0.0])
    explicit = tuple(grid.evaluation_times("uniform", 12, sde, 1e-3))
    a, _ = _sample(sde, "euler_maruyama", 32, 12)
    b, _ = _sample(sde, "euler_maruyama", 32, 12, time_grid=explicit)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    c, _ = _sample(sde, "euler_maruyama", 32, 12, time_grid="quadratic")
    assert np.abs(c - a).max() > 1e-3
    # chain grids: uniform strides of the N-chain from index N - 1 down to 0, with the SDE's
    # own marginal there: the chain's alpha_bar for the chain SDE, alpha(t_i)^2 for VP
    chain_sde = sde_lib.DiscreteVPSDE()
    coeffs = grid.chain_grid(chain_sde, grid.evaluation_times("uniform", 4, chain_sde, 1e-3))
    np.testing.assert_allclose(np.asarray(coeffs.t), [1.0, 0.667, 0.334, 0.001])
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(np.asarray(coeffs.alpha) ** 2, alpha_bar[[999, 666, 333, 0]],
                               rtol=1e-10)
    coeffs = grid.chain_grid(sde, grid.evaluation_times("uniform", 4, sde, 1e-3))
    t = np.array([1.0, 0.667, 0.334, 0.001])
    np.testing.assert_allclose(np.asarray(coeffs.alpha),
                               np.exp(-0.25 * t**2 * 19.9 - 0.05 * t), rtol=1e-10)


# ----- bad input ----------------------------------------------------------------------------------

def _never_called(x, t):
    raise AssertionError("score_fn was traced: validation must come first")


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "heun"}, r"method must be one of \('ddpm_ancestral', 'euler_maruyama'"),
    ({"num_steps": 0}, "num_steps must be an integer >= 1"),
    ({"num_steps": 2.5}, "num_steps must be an integer >= 1"),
    ({"eps": 0.0}, r"eps must be a real number in \(0, T=1.0\)"),
    ({"eps": 1.0}, r"eps must be a real number in \(0, T=1.0\)"),
    ({"shape": (4,)}, r"shape must be \(B, \*D\)"),
    ({"method": "ddim", "snr": 0.1}, r"unknown options \['snr'\] for method 'ddim'"),
    ({"method": "ddim", "eta": -1.0}, "eta must be a real number >= 0"),
    ({"method": "ddpm_ancestral", "variance": "large"}, r"variance must be one of \('beta'"),
    ({"method": "pc", "snr": 0.0}, "snr must be a positive real number"),
    ({"method": "pc", "predictor": "ddim"}, r"predictor must be one of"),
    ({"method": "pc", "time_grid": "quadratic"}, "time_grid must be 'uniform' for pc"),
    ({"method": "pf_ode_adaptive", "solver": "rk4"}, r"solver must be one of"),
    ({"method": "euler_maruyama", "time_grid": "cosine"}, r"time_grid must be one of"),
    ({"method": "euler_maruyama", "time_grid": (1.0, 0.5)}, "strictly decreasing sequence"),
    ({"method": "reverse_diffusion", "num_steps": 10}, "too few for reverse_diffusion"),
    ({"method": "ddpm_ancestral", "num_steps": 1001}, "distinct steps of the sde's DDPM chain"),
])
def test_bad_input_raises_before_tracing(kwargs, match):
    args = {"shape": (4, 2), "method": "euler_maruyama", "num_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        sde_lib.sample(jax.random.key(0), sde_lib.VPSDE(), _never_called, **args)


@pytest.mark.parametrize("method", ["euler_maruyama",
                                    *(pytest.param(m, marks=pytest.mark.slow)
                                      for m in ("ddpm_ancestral", "pf_ode_adaptive"))])
def test_score_of_the_wrong_shape_is_refused(method):
    """A score_fn whose output is not shaped like x (here (1, D), which would broadcast over the
    batch) raises a ValueError naming score_fn when the sampler is traced."""
    def score_fn(x, t):
        return -x[:1]
    with pytest.raises(ValueError, match=r"score_fn must return a floating array shaped like "
                                         r"x \(4, 2\), got float\d+ of shape \(1, 2\)"):
        sde_lib.sample(jax.random.key(0), sde_lib.VPSDE(), score_fn, (4, 2), method=method,
                       num_steps=10)


# the reproduction: an exact 3-component mixture score through jnp.linalg.solve and
# slogdet of (B, K, 5, 5) covariances, pc at batch 20,000 (XLA:CPU deadlocked without the
# driver's ordering of score evaluations, see sde_lib._validation.shape_checked)
_PC_LINALG = """
import os, sys
os.sched_setaffinity(0, [int(c) for c in sys.argv[1:]])  # before jax sizes its thread pool
import jax, jax.numpy as jnp, numpy as np, sde_lib
K, D = 3, 5
rng = np.random.default_rng(0)
mus = jnp.asarray(rng.normal(size=(K, D)) * 3, jnp.float32)
A = rng.normal(size=(K, D, D))
covs = jnp.asarray(A @ A.transpose(0, 2, 1) / D + 0.1 * np.eye(D), jnp.float32)
sde = sde_lib.VPSDE()
def log_p_t(x, t):
    m, s = sde.marginal_coeffs(t)
    C = m**2 * covs + s**2 * jnp.eye(D)
    diff = x - m * mus
    sol = jnp.linalg.solve(C, diff[..., None])[..., 0]
    logdet = jnp.linalg.slogdet(C)[1]
    return jax.scipy.special.logsumexp(-0.5 * jnp.sum(diff * sol, -1) - 0.5 * logdet)
score = jax.vmap(jax.grad(log_p_t))
x, nfe = sde_lib.sample(jax.random.PRNGKey(0), sde, lambda x, t: score(x, t), (20000, D),
                        method="pc", num_steps=30)
print("finite", bool(np.isfinite(np.asarray(x)).all()), int(nfe))
"""


@pytest.mark.slow
def test_pc_with_a_linalg_score_at_batch_20000_finishes():
    """The issue's deadlock: pc with a score that calls LAPACK (solve, slogdet) at batch 20,000,
    on two CPUs (where it deadlocked from batch 1,800; the pool's size is the affinity's),
    finishes in a subprocess within a generous timeout."""
    import os
    import subprocess
    import sys
    cpus = sorted(os.sched_getaffinity(0))[:2]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _PC_LINALG, *map(str, cpus)], env=env,
                         capture_output=True, cwd=root, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["finite", "True", "60"], out.stdout


def test_chain_option_needs_a_chain():
    with pytest.raises(ValueError, match="chain=True needs an SDE with a DDPM chain"):
        sde_lib.sample(jax.random.key(0), sde_lib.VESDE(), _never_called, (4, 2),
                       method="ddim", num_steps=10, chain=True)


def test_samplers_are_values():
    """Each registered ``Sampler`` knows its cost and whether it is adaptive: ``num_steps_for``
    returns the most steps within an NFE budget (Heun 2K - 1, pc K (n + 1)), the adaptive one
    takes no ``num_steps`` and ``build_sampler`` refuses it, naming it adaptive."""
    for name, sampler in sde_lib.SAMPLERS.items():
        assert sampler.name == name and sampler.adaptive == (sampler.solve is not None)
        if sampler.adaptive:
            assert sampler.grid is None and sampler.num_steps_for(50) == 1
            with pytest.raises(ValueError, match="is adaptive"):
                sde_lib.sampling.build_sampler(sde_lib.VPSDE(), None, name, 10)
            continue
        opts = sampler.check_options({})
        for budget in (1, 10, 21, 100):
            k = sampler.num_steps_for(budget)
            assert k >= 1 and (sampler.nfe(k, opts) <= budget or k == 1)
            assert sampler.nfe(k + 1, opts) > budget
    assert sde_lib.sampling.get_sampler("pf_ode_heun").num_steps_for(20) == 10
    assert sde_lib.sampling.get_sampler("pc").num_steps_for(20, corrector_steps=3) == 5
    with pytest.raises(ValueError, match=r"unknown options \['eta'\] for method 'pc'"):
        sde_lib.sampling.get_sampler("pc").num_steps_for(20, eta=1.0)


# ----- Sweep: one compiled program for every num_steps and time grid --------------------------

SWEPT = {name: ({"predictor": "euler_maruyama"} if name == "pc" else {})
         for name, s in sde_lib.SAMPLERS.items()
         if not s.adaptive and not s.discretized(s.check_options({}))
         or name == "pc"}


def _sweep_matches_sample(method, options, steps_list, max_num_steps, time_grid=None):
    sde = sde_lib.VPSDE()
    score_fn = MIXTURE.score_fn(sde)
    sweep = sde_lib.Sweep(sde, (16, 2), method, max_num_steps=max_num_steps, **options)
    for k in steps_list:
        grid_options = {} if time_grid is None else {"time_grid": time_grid(k)}
        x, nfe = sweep(jax.random.key(k), score_fn, k, **grid_options)
        want, want_nfe = sde_lib.sample(jax.random.key(k), sde, score_fn, (16, 2), method,
                                        num_steps=k, **options, **grid_options)
        assert nfe == want_nfe
        np.testing.assert_allclose(np.asarray(x), np.asarray(want), rtol=1e-10, atol=1e-10,
                                   err_msg=f"{method} at num_steps={k}")


@pytest.mark.slow
def test_sweep_gives_the_samples_of_sample():
    """``Sweep`` runs the first ``K`` entries of a padded grid with a traced trip count: the same
    samples as ``sample`` with ``num_steps = K`` for the same key (float64), at ``K = 1`` and at
    the maximum, on the default grid and on an explicit one given at the call; Euler-Maruyama
    (its step keys are those of ``sample``)."""
    _sweep_matches_sample("euler_maruyama", {}, (1, 6), 6)
    _sweep_matches_sample("euler_maruyama", {}, (4,), 6,
                          time_grid=lambda k: tuple(np.geomspace(1.0, 1e-3, k)))


@pytest.mark.slow
def test_sweep_gives_the_samples_of_sample_for_every_method():
    """As above for every fixed-step method ``Sweep`` takes (pc with the Euler-Maruyama
    predictor), at 1, 2, 5 and 9 of 9 steps: DPM-Solver++(3) checks the per-step orders of its
    grid (warm-up and the last two steps), EDM's stochastic sampler its raised noise levels."""
    assert set(SWEPT) == set(sde_lib.SAMPLERS) - {"pf_ode_adaptive", "reverse_diffusion"}
    for method, options in {**SWEPT, "dpm_solver_pp": {"order": 3}}.items():
        _sweep_matches_sample(method, options, (1, 2, 5, 9), 9)


@pytest.mark.slow
def test_a_six_point_nfe_sweep_compiles_once():
    """A 6-point NFE sweep (5 .. 160 evaluations) of Heun's probability-flow sampler with a
    network's score compiles the sampler program once (XLA compilations counted through
    jax.monitoring); new parameters of the same network and a new time grid compile nothing
    more. The other compilations are the host grid's element-wise operations on new shapes
    (single primitives), not programs over the steps."""
    from _compiles import count_compilations

    import models

    sde = sde_lib.VPSDE(N=1000, T=0.993)  # an SDE no other test uses: the first call compiles
    model = models.get_model("mlp", hidden=8, num_blocks=1)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros(1))["params"]
    sampler = sde_lib.sampling.get_sampler("pf_ode_heun")
    budgets = (5, 10, 20, 40, 80, 160)
    sweep = sde_lib.Sweep(sde, (8, 2), "pf_ode_heun",
                          max_num_steps=sampler.num_steps_for(max(budgets)))
    with count_compilations() as compiles:
        for nfe in budgets:
            score_fn = models.get_score_fn(sde, model, params)
            x, got = sweep(jax.random.key(0), score_fn, sampler.num_steps_for(nfe))
            assert got <= nfe and x.shape == (8, 2) and bool(jnp.all(jnp.isfinite(x)))
    programs = [c for c in compiles if "_sweep_program" in c.name]
    assert len(programs) == 1, compiles
    assert all(c.name.startswith("jit(") and "loop" not in c.name and "scan" not in c.name
               for c in compiles if c not in programs), compiles
    with count_compilations() as again:
        score_fn = models.get_score_fn(sde, model, jax.tree.map(lambda a: 1.1 * a, params))
        sweep(jax.random.key(1), score_fn, 30)
        sweep(jax.random.key(1), score_fn, 30, time_grid="karras")
    assert not [c for c in again if "_sweep_program" in c.name], again


def test_sweep_refuses_what_it_cannot_sweep():
    """Adaptive and discretized methods (named), ``num_steps`` beyond ``max_num_steps``, and
    the usual option errors, before anything is traced."""
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="'pf_ode_adaptive' is adaptive"):
        sde_lib.Sweep(sde, (4, 2), "pf_ode_adaptive", 10)
    for method in ("reverse_diffusion", "pc"):
        with pytest.raises(ValueError, match=f"method '{method}' with these options steps on"):
            sde_lib.Sweep(sde, (4, 2), method, 10)
    with pytest.raises(ValueError, match="max_num_steps must be an integer >= 1"):
        sde_lib.Sweep(sde, (4, 2), "ddim", 0)
    with pytest.raises(ValueError, match=r"unknown options \['snr'\]"):
        sde_lib.Sweep(sde, (4, 2), "ddim", 10, snr=0.1)
    sweep = sde_lib.Sweep(sde, (4, 2), "ddim", 10)
    with pytest.raises(ValueError, match="num_steps must be at most max_num_steps=10, got 11"):
        sweep(jax.random.key(0), _never_called, 11)
    with pytest.raises(ValueError, match="time_grid must be one of"):
        sweep(jax.random.key(0), _never_called, 5, time_grid="cosine")
