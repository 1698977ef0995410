"""Bad input raises ValueError at construction, naming the argument."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import sde_lib


@pytest.mark.parametrize("make,match", [
    (lambda: sde_lib.VPSDE(beta_min=0.0), "beta_min must be a positive"),
    (lambda: sde_lib.VPSDE(beta_min=-0.1), "beta_min must be a positive"),
    (lambda: sde_lib.VPSDE(beta_max=float("nan")), "beta_max must be a positive"),
    (lambda: sde_lib.VPSDE(beta_max=float("inf")), "beta_max must be a positive"),
    (lambda: sde_lib.VESDE(sigma_max=float("inf")), "sigma_max must be a positive"),
    (lambda: sde_lib.VPSDE(T=float("inf")), "T must be a positive"),
    (lambda: sde_lib.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min must be <= beta_max"),
    (lambda: sde_lib.subVPSDE(beta_min=5.0, beta_max=1.0), "beta_min must be <= beta_max"),
    (lambda: sde_lib.VPSDE(N=0), "N must be an integer >= 1"),
    (lambda: sde_lib.VPSDE(N=10.5), "N must be an integer >= 1"),
    (lambda: sde_lib.VPSDE(T=0.0), "T must be a positive"),
    (lambda: sde_lib.CosineVPSDE(s=-0.1), "s must be a positive"),
    (lambda: sde_lib.CosineVPSDE(max_discrete_beta=1.0), "max_discrete_beta must be in"),
    (lambda: sde_lib.VESDE(sigma_min=0.0), "sigma_min must be a positive"),
    (lambda: sde_lib.VESDE(sigma_min=2.0, sigma_max=1.0), "sigma_min must be smaller than"),
    (lambda: sde_lib.VESDE(N=-3), "N must be an integer >= 1"),
    (lambda: sde_lib.OrnsteinUhlenbeckSDE(beta=0.0), "beta must be a positive"),
    (lambda: sde_lib.OrnsteinUhlenbeckSDE(sigma=-1.0), "sigma must be a positive"),
    (lambda: sde_lib.BrownianMotionSDE(sigma=0.0), "sigma must be a positive"),
    (lambda: sde_lib.DDPMChain([0.1, 1.0]), r"betas must lie in the open interval \(0, 1\)"),
    (lambda: sde_lib.DDPMChain([0.0, 0.1]), r"betas must lie in the open interval \(0, 1\)"),
    (lambda: sde_lib.DDPMChain(np.full((2, 2), 0.1)), "betas must be a 1-D array"),
    (lambda: sde_lib.DDPMChain([]), "betas must be a 1-D array"),
    (lambda: sde_lib.DDPMChain.from_sde(sde_lib.VPSDE(N=10)), "betas must lie in"),
])
def test_bad_sde_and_chain_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("call, match", [
    (lambda: sde_lib.VPSDE().marginal_prob(jnp.zeros((2, 2)), jnp.array([0.5, 1.5])),
     r"t must lie in \[0, T=1.0\], got values in \[0.5, 1.5\]"),
    (lambda: sde_lib.VESDE().marginal_prob(jnp.zeros((2, 2)), jnp.array([-0.1, 0.5])),
     r"t must lie in \[0, T=1.0\]"),
    (lambda: sde_lib.VPSDE().discretize(jnp.zeros((2, 2)), jnp.array([0.2, 1.2])),
     r"t must lie in \[0, T=1.0\]"),
    (lambda: sde_lib.DiscreteVPSDE().discretize(jnp.zeros((2, 2)), jnp.array([0.2, jnp.nan])),
     r"t must lie in \[0, T=1.0\]"),
    (lambda: sde_lib.ring_of_gaussians().marginal(sde_lib.VPSDE(), 2.0),
     r"t must lie in \[0, T=1.0\], got values in \[2.0, 2.0\]"),
    (lambda: sde_lib.DDPMChain.from_sde(sde_lib.VPSDE()).q_sample(
        jnp.zeros((2, 2)), jnp.array([3, 1000]), jnp.zeros((2, 2))),
     r"i must be integers in 0 \.\. N - 1 = 999, got int\d+ values in \[3, 1000\]"),
    (lambda: sde_lib.DDPMChain.from_sde(sde_lib.VPSDE()).p_mean(
        jnp.zeros((2, 2)), jnp.array([-1, 3]), jnp.zeros((2, 2))),
     r"i must be integers in 0 \.\. N - 1 = 999"),
])
def test_times_and_indices_out_of_range_are_refused(call, match):
    """Concrete times outside [0, T] and chain indices outside 0 .. N - 1 (which JAX would
    extrapolate or clamp silently) raise a ValueError naming the argument and the range."""
    with pytest.raises(ValueError, match=match):
        call()




@pytest.mark.parametrize("call", [
    lambda: sde_lib.VPSDE().marginal_prob(jnp.zeros((4, 2)), jnp.full((3,), 0.5)),
    lambda: sde_lib.VPSDE().sde(jnp.zeros((4, 2)), jnp.full((2,), 0.5)),
    lambda: sde_lib.DDPMChain.from_sde(sde_lib.VPSDE()).q_sample(
        jnp.zeros((4, 2)), jnp.array([1, 2, 3]), jnp.zeros((4, 2))),
    lambda: jax.jit(lambda t: sde_lib.subVPSDE().marginal_prob(jnp.zeros((4, 2)), t))(
        jnp.full((5,), 0.5)),
])
def test_times_of_the_wrong_shape_are_refused_naming_both_shapes(call):
    """A (2,), (3,) or (5,) array of times for a batch of 4 (which JAX would report as a
    broadcasting error many frames down, or broadcast silently) is a ValueError naming the
    shapes, also under jit (shapes are static)."""
    with pytest.raises(ValueError, match=r"of shape \((2|3|5),\) does not fit x of shape "
                                         r"\(4, 2\): t must be a scalar or shaped \(B,\)"):
        call()


def test_debug_checks_make_traced_times_and_indices_checkify_checks():
    """Under jit a time outside [0, T] cannot be checked in Python and passes through; within
    debug_checks() it becomes a checkify check that names t and the range."""
    from jax.experimental import checkify
    sde, x = sde_lib.VPSDE(), jnp.zeros((2, 2))
    jitted = jax.jit(lambda t: sde.marginal_prob(x, t)[0])
    assert jitted(jnp.array([0.5, 1.5])).shape == (2, 2)  # unchecked, extrapolated
    with sde_lib.debug_checks():
        err, _ = checkify.checkify(jax.jit(lambda t: sde.marginal_prob(x, t)[0]))(
            jnp.array([0.5, 1.5]))
        ok, _ = checkify.checkify(jax.jit(lambda t: sde.marginal_prob(x, t)[0]))(
            jnp.array([0.5, 0.7]))
        chain = sde_lib.DDPMChain.from_sde(sde)
        err_i, _ = checkify.checkify(jax.jit(lambda i: chain.q_sample(x, i, x)))(
            jnp.array([3, 1000]))
    with pytest.raises(Exception, match=r"t must lie in \[0, T=1.0\], got values in "
                                        r"\[0.5, 1.5\]"):
        err.throw()
    ok.throw()  # nothing to raise
    with pytest.raises(Exception, match=r"i must be integers in 0 \.\. N - 1 = 999, got "
                                        r"values in \[3, 1000\]"):
        err_i.throw()

_W, _M, _C = np.array([0.5, 0.5]), np.zeros((2, 2)), np.stack([np.eye(2)] * 2)


@pytest.mark.parametrize("weights,means,covs,match", [
    (np.array([0.5, 0.6]), _M, _C, "weights must be non-negative and sum to one"),
    (np.array([1.5, -0.5]), _M, _C, "weights must be non-negative and sum to one"),
    (np.array([[0.5, 0.5]]), _M, _C, r"weights must have shape \(K,\)"),
    (_W, np.zeros((3, 2)), _C, r"means must have shape \(K, d\)"),
    (_W, _M, np.stack([np.eye(3)] * 2), r"covs must have shape \(K, d, d\)"),
    (_W, _M, np.stack([np.eye(2), -np.eye(2)]), "covs must be positive definite"),
    (_W, _M, np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]), "covs must be positive definite"),
    (_W, _M, np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), "covs must be symmetric"),
    (_W, np.full((2, 2), np.inf), _C, "means must be finite"),
])
def test_bad_mixture_arguments(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        sde_lib.GaussianMixture(weights, means, covs)


def test_public_api_names():
    """The names ../shared/API.md promises exist with their documented signatures."""
    vp = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    for attr in ("T", "N", "sde", "marginal_prob", "prior_sampling", "prior_logp", "discretize",
                 "reverse", "discrete_betas"):
        assert hasattr(vp, attr), attr
    chain = sde_lib.DDPMChain.from_sde(vp)
    for attr in ("betas", "alphas", "alphas_cumprod", "q_sample", "q_posterior"):
        assert hasattr(chain, attr), attr
    gmm = sde_lib.asymmetric_mixture_2d()
    for attr in ("sample", "log_prob", "marginal", "score_fn"):
        assert hasattr(gmm, attr), attr
    rsde = vp.reverse(lambda x, t: -x, probability_flow=False)
    assert hasattr(rsde, "sde") and hasattr(rsde, "discretize")
    params = inspect.signature(sde_lib.sample).parameters
    assert list(params)[:8] == ["rng", "sde", "score_fn", "shape", "method", "num_steps", "eps",
                                "options"]
    assert params["method"].default == "euler_maruyama" and params["eps"].default == 1e-3
    api = {"euler_maruyama", "reverse_diffusion", "ddpm_ancestral", "ddim", "pf_ode_euler",
           "pf_ode_heun", "pf_ode_adaptive", "pc"}  # API.md's, and the fast samplers beside
    assert set(sde_lib.SAMPLERS) == api | {"dpm_solver_pp", "dpm_solver_2s", "unipc",
                                           "edm_heun", "edm_stochastic"}
    assert list(inspect.signature(sde_lib.log_likelihood).parameters)[:4] == [
        "rng", "sde", "score_fn", "x"]


def test_which_sdes_have_a_ddpm_chain():
    """Having a chain is part of an SDE's type (``has_chain``), not a probe: the VP SDEs have one
    (with ``discrete_betas``), sub-VP (not a VPSDE subclass) and the others do not; the chain
    samplers, DDPM losses and the ELBO refuse SDEs without one, naming the argument."""
    with_chain = (sde_lib.VPSDE(), sde_lib.CosineVPSDE(), sde_lib.DiscreteVPSDE())
    without = (sde_lib.subVPSDE(), sde_lib.VESDE(), sde_lib.OrnsteinUhlenbeckSDE(),
               sde_lib.BrownianMotionSDE())
    for sde in with_chain:
        assert sde.has_chain and sde.discrete_betas.shape == (sde.N,)
    for sde in without:
        assert not sde.has_chain and not hasattr(sde, "discrete_betas")
    assert not isinstance(sde_lib.subVPSDE(), sde_lib.VPSDE)
    subvp, x = sde_lib.subVPSDE(), jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="chain=True needs an SDE with a DDPM chain"):
        sde_lib.sample(jax.random.PRNGKey(0), subvp, lambda x, t: -x, (2, 2), "ddim",
                       num_steps=5, chain=True)
    with pytest.raises(ValueError, match="needs an SDE with a DDPM chain"):
        sde_lib.get_loss_fn(subvp, {"name": "ddpm_eps"})
    with pytest.raises(ValueError, match="sde must have a DDPM chain"):
        sde_lib.ddpm_negative_elbo(jax.random.PRNGKey(0), subvp, lambda x, t: -x, x)


# ----- inputs of the wrong kind, shape or size at the entry points (issue 28, part 8) ------------

_SDE, _X, _KEY = sde_lib.VPSDE(N=100), jnp.full((3, 2), 0.1), jax.random.PRNGKey(0)
_A, _Y = jnp.eye(2)[:1], jnp.zeros(1)


def _ok(x, t):
    return -x


_SCORE_CALLS = {
    "log_likelihood": lambda s: sde_lib.log_likelihood(_KEY, _SDE, s, _X),
    "log_likelihood exact": lambda s: sde_lib.log_likelihood(_KEY, _SDE, s, _X,
                                                             divergence="exact"),
    "log_likelihood heun": lambda s: sde_lib.log_likelihood(_KEY, _SDE, s, _X, solver="heun",
                                                            num_steps=2),
    "ddpm_negative_elbo": lambda s: sde_lib.ddpm_negative_elbo(_KEY, _SDE, s, _X),
    "conditional_sample dps": lambda s: sde_lib.conditional_sample(
        _KEY, _SDE, s, (3, 2), _A, _Y, sigma_y=0.1, guidance="dps", num_steps=2),
    "conditional_sample normalized dps": lambda s: sde_lib.conditional_sample(
        _KEY, _SDE, s, (3, 2), _A, _Y, guidance="dps", normalize=True, num_steps=2),
    "posterior_moments": lambda s: sde_lib.posterior_moments(s, _SDE, _X, jnp.full((3,), 0.5)),
    "sampler_map": lambda s: sde_lib.evaluation.sampler_map(_SDE, s, "pf_ode_euler", 2)(_X),
    "sample (dtype)": lambda s: sde_lib.sample(_KEY, _SDE, s, (3, 2), num_steps=2),
}


@pytest.mark.parametrize("call", _SCORE_CALLS.values(), ids=_SCORE_CALLS.keys())
@pytest.mark.parametrize("bad", [lambda x, t: x[:, :1], lambda x, t: x[:1],
                                 lambda x, t: jnp.zeros(x.shape, jnp.int32)],
                         ids=["(B, 1)", "(1, D)", "int32"])
def test_a_score_of_the_wrong_shape_or_dtype_is_refused_at_every_entry_point(call, bad):
    """A score shaped (B, 1) or (1, D), or of integer dtype, broadcast silently (finite
    log-likelihoods, ELBOs and conditional samples) or raised an error blaming t; every entry
    point refuses it when traced, naming score_fn and the shape it must have."""
    with pytest.raises(ValueError, match=r"score_fn must return a floating array shaped like x "
                                         r"\(3, 2\), got \w+ of shape \((3, 1|1, 2|3, 2)\)"):
        call(bad)


def test_log_likelihood_and_the_elbo_refuse_integer_data_as_the_losses_do():
    x = jnp.ones((3, 2), jnp.int32)
    for call in (lambda: sde_lib.log_likelihood(_KEY, _SDE, _ok, x),
                 lambda: sde_lib.ddpm_negative_elbo(_KEY, _SDE, _ok, x),
                 lambda: sde_lib.get_loss_fn(_SDE, {})(_KEY, _ok, x)):
        with pytest.raises(TypeError, match="x0? must be a floating array .* got dtype int32"):
            call()


def _nan_score(x, t):
    return x * jnp.nan


@pytest.mark.parametrize("solve", [
    lambda s, **kw: sde_lib.sample(_KEY, _SDE, s, (3, 2), "pf_ode_adaptive", **kw),
    lambda s, **kw: sde_lib.log_likelihood(_KEY, _SDE, s, _X, **kw),
], ids=["pf_ode_adaptive", "log_likelihood"])
@pytest.mark.parametrize("score, match", [
    (_nan_score, r"score_fn\(x, t\) must be finite: it holds NaN"),
    pytest.param(_ok, r"max_steps=2 is too small: the adaptive solve stopped at t=",
                 marks=pytest.mark.slow),
], ids=["nan", "finite"])
def test_a_non_finite_score_is_named_by_the_adaptive_solvers(solve, score, match):
    """A NaN score made the adaptive solves reject every step and report "the maximum number of
    solver steps was reached"; now the error names score_fn, and max_steps only when the score
    is finite where the solve stopped."""
    with pytest.raises(ValueError, match=match):
        solve(score, max_steps=2)


@pytest.mark.parametrize("call", [
    lambda s: sde_lib.log_likelihood(_KEY, _SDE, s, _X, num_steps=4, solver="euler"),
    lambda s: sde_lib.log_likelihood(_KEY, _SDE, s, _X, num_steps=4, solver="heun",
                                     divergence="exact"),
    lambda s: sde_lib.ddpm_negative_elbo(_KEY, _SDE, s, _X, num_steps=4),
], ids=["euler", "heun exact", "elbo"])
def test_a_non_finite_score_is_named_by_the_fixed_step_likelihoods(call):
    """The fixed-step likelihoods and the ELBO returned NaN quietly for a NaN score; their
    result is checked (the data are, before), and a finite score passes."""
    with pytest.raises(ValueError, match=r"result must be finite: .* x is finite, so score_fn "
                                         r"returned NaN or inf"):
        call(_nan_score)
    out = call(_ok)
    assert np.all(np.isfinite(np.asarray(out[0])))


@pytest.mark.parametrize("fn, arg, match", [
    (lambda k: sde_lib.log_likelihood(k, _SDE, _nan_score, _X, max_steps=16)[0], _KEY,
     r"score_fn(\(x, t\) must be finite| returned NaN or inf, or max_steps=16)"),
    pytest.param(lambda x: sde_lib.log_likelihood(_KEY, _SDE, _ok, x, max_steps=16)[0],
                 _X.at[0, 0].set(jnp.inf), "x must be finite", marks=pytest.mark.slow),
], ids=["score", "data"])
def test_non_finite_data_and_scores_under_jit_are_checkify_checks_in_debug_mode(fn, arg, match):
    """Under a caller's jit the values cannot be checked in Python; within debug_checks() they
    are checkify checks (the score's own, or the failed solve's, whichever checkify reports)."""
    from jax.experimental import checkify
    with sde_lib.debug_checks():
        err, _ = checkify.checkify(jax.jit(fn))(arg)
    with pytest.raises(Exception, match=match):
        err.throw()


_KIND_CALLS = {
    "sample": lambda rng, sde: sde_lib.sample(rng, sde, _ok, (3, 2), num_steps=2),
    "sample pf_ode_adaptive": lambda rng, sde: sde_lib.sample(rng, sde, _ok, (3, 2),
                                                              "pf_ode_adaptive"),
    "Sweep": lambda rng, sde: sde_lib.Sweep(sde, (3, 2), max_num_steps=2)(rng, _ok, 2),
    "log_likelihood": lambda rng, sde: sde_lib.log_likelihood(rng, sde, _ok, _X),
    "ddpm_negative_elbo": lambda rng, sde: sde_lib.ddpm_negative_elbo(rng, sde, _ok, _X),
    "conditional_sample": lambda rng, sde: sde_lib.conditional_sample(
        rng, sde, _ok, (3, 2), _A, _Y, num_steps=2),
    "get_loss_fn": lambda rng, sde: sde_lib.get_loss_fn(sde, {})(rng, _ok, _X),
    "coupled_error": lambda rng, sde: sde_lib.coupled_error(
        rng, sde, _ok, (3, 2), "euler_maruyama", (2,), 4),
    "flow_kl": lambda rng, sde: sde_lib.flow_kl(rng, sde, _ok, lambda x: x[:, 0], 3, 2,
                                                "pf_ode_euler", 2),
}


@pytest.mark.parametrize("call", _KIND_CALLS.values(), ids=_KIND_CALLS.keys())
def test_rng_and_sde_of_the_wrong_kind_are_named(call):
    """rng=0 gave a raw JAX TypeError about key data and sde=None an AttributeError."""
    with pytest.raises(TypeError, match=r"rng must be a jax PRNG key \(jax.random.key\(seed\) "
                                        r"or jax.random.PRNGKey\(seed\)\), got int"):
        call(0, _SDE)
    with pytest.raises(TypeError, match=r"sde must be an SDE of sde_lib \(a LinearSDE: VPSDE, "
                                        r".*sde_lib.get_sde\(name\)\), got None"):
        call(_KEY, None)


def test_typed_and_raw_keys_are_both_taken_also_when_traced():
    x, _ = sde_lib.sample(jax.random.key(0), _SDE, _ok, (3, 2), num_steps=2)
    traced = jax.jit(lambda k: sde_lib.sample(k, _SDE, _ok, (3, 2), num_steps=2)[0])
    chex.assert_trees_all_close(traced(jax.random.PRNGKey(0)), x)


@pytest.mark.parametrize("call", [
    lambda: sde_lib.sample(_KEY, _SDE, _ok, (3, 2), num_steps=10**9),
    lambda: sde_lib.Sweep(_SDE, (3, 2), max_num_steps=10**9),
    lambda: sde_lib.log_likelihood(_KEY, _SDE, _ok, _X, max_steps=10**9),
    lambda: sde_lib.sample(_KEY, _SDE, _ok, (3, 2), "pf_ode_adaptive", max_steps=10**9),
    lambda: sde_lib.VPSDE(N=10**9),
], ids=["sample", "Sweep", "log_likelihood", "pf_ode_adaptive", "VPSDE"])
def test_a_number_of_steps_beyond_memory_is_refused_before_allocating(call):
    """num_steps=10**9 allocated a 7.45 GiB time grid (numpy MemoryError); now every step
    count that sizes a grid or chain is refused above MAX_NUM_STEPS, naming it and the range."""
    with pytest.raises(ValueError, match=r"(num_steps|max_num_steps|max_steps|N) must be an "
                                         r"integer >= 1 and <= 1000000 .* got 1000000000"):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: sde_lib.get_sde("vpp"), r"got 'vpp'; did you mean 'vp'\?"),
    (lambda: sde_lib.sample(_KEY, _SDE, _ok, (3, 2), method="ddimm", num_steps=2),
     r"got 'ddimm'; did you mean 'ddim'\?"),
    (lambda: models.get_model("mpl"), r"got 'mpl'; did you mean 'mlp'\?"),
], ids=["sde", "sampler", "model"])
def test_a_misspelt_name_gets_the_closest_valid_one(call, match):
    with pytest.raises(ValueError, match=match):
        call()
