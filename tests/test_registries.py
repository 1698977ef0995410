"""The registries: samplers (one family module registers each), SDEs, divergences, and the
public names of ``sde_lib``."""

import ast
import pathlib

import pytest

import sde_lib
from sde_lib import divergence, losses
from sde_lib.sampling import registry

SAMPLING_DIR = pathlib.Path(sde_lib.sampling.__file__).parent
# the order experiments' tables and plots list the samplers in (they iterate SAMPLERS)
SAMPLER_ORDER = ("ddpm_ancestral", "euler_maruyama", "reverse_diffusion", "pf_ode_euler",
                 "pf_ode_heun", "pf_ode_adaptive", "ddim", "pc", "dpm_solver_pp",
                 "dpm_solver_2s", "unipc", "edm_heun", "edm_stochastic")


def _registered_names(path: pathlib.Path) -> list[str]:
    """The names of the ``register(Sampler("name", ...))`` calls in a module's source."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "register" and node.args
                and isinstance(node.args[0], ast.Call)):
            names.append(ast.literal_eval(node.args[0].args[0]))
    return names


def test_each_sampler_is_registered_by_exactly_one_family_module():
    """Every entry of ``SAMPLERS`` is registered once, by one module of ``sde_lib/sampling/``,
    the module that defines its grid and step (or solve); the registry is complete after
    ``import sde_lib.sampling``, in the order the experiments list the samplers."""
    by_module = {path.stem: _registered_names(path) for path in SAMPLING_DIR.glob("*.py")}
    owners = {}
    for module, names in by_module.items():
        for name in names:
            assert name not in owners, f"{name} registered by {owners[name]} and {module}"
            owners[name] = module
    assert tuple(sde_lib.SAMPLERS) == SAMPLER_ORDER
    assert set(owners) == set(SAMPLER_ORDER)
    assert not {"registry", "driver", "sweep", "grid", "multistep"} & {
        m for m, names in by_module.items() if names}
    # the step function each sampler runs is its family's (ddim's is ancestral.py's general step)
    step_home = {**owners, "ddim": "ancestral"}
    for name, sampler in sde_lib.SAMPLERS.items():
        if sampler.adaptive:
            fn = sampler.solve
        else:
            fn = sampler.step(sde_lib.VPSDE(), None, sampler.check_options({}))
            fn = fn.step if isinstance(fn, sde_lib.sampling.multistep.Multistep) else fn
            fn = fn.func
        assert fn.__module__ == f"sde_lib.sampling.{step_home[name]}", (name, fn)


def test_register_refuses_a_taken_name():
    before = dict(sde_lib.SAMPLERS)
    with pytest.raises(ValueError, match="'euler_maruyama' is registered already"):
        sde_lib.sampling.register(registry.Sampler("euler_maruyama", {}))
    with pytest.raises(TypeError, match="register takes a Sampler"):
        sde_lib.sampling.register("euler_maruyama")
    assert sde_lib.SAMPLERS == before


def test_get_sampler_names_the_valid_methods():
    assert sde_lib.sampling.get_sampler("ddim") is sde_lib.SAMPLERS["ddim"]
    with pytest.raises(ValueError, match=r"method must be one of \('ddpm_ancestral', "):
        sde_lib.sampling.get_sampler("heun")


def test_get_sde_builds_every_entry_with_default_arguments():
    """One name per SDE, the names the configs use."""
    assert sde_lib.SDES == {
        "vp": sde_lib.VPSDE, "ddpm": sde_lib.DiscreteVPSDE, "subvp": sde_lib.subVPSDE,
        "cosine": sde_lib.CosineVPSDE, "ve": sde_lib.VESDE, "ou": sde_lib.OrnsteinUhlenbeckSDE,
        "bm": sde_lib.BrownianMotionSDE}
    for name, cls in sde_lib.SDES.items():
        sde = sde_lib.get_sde(name)
        assert type(sde) is cls and sde == cls()
    assert sde_lib.get_sde("vp", beta_max=10.0, N=50) == sde_lib.VPSDE(beta_max=10.0, N=50)


def test_get_sde_errors_name_the_valid_names_and_the_bad_arguments():
    with pytest.raises(ValueError, match=r"sde name must be one of \['bm', 'cosine', 'ddpm', "
                                         r"'ou', 'subvp', 've', 'vp'\], got 'vpsde'"):
        sde_lib.get_sde("vpsde")
    with pytest.raises(ValueError, match=r"bad keyword arguments \{'sigma_max': 5.0\} for SDE "
                                         r"'vp'"):
        sde_lib.get_sde("vp", sigma_max=5.0)


def test_one_definition_of_the_divergences():
    """The losses take every divergence name; the likelihood's one-probe estimates are a subset
    (no sphere probes), in the order its error message lists them."""
    assert losses.DIVERGENCES is divergence.DIVERGENCES
    assert divergence.DIVERGENCES == ("exact", "gaussian", "rademacher", "sphere")
    assert losses.PROBES is divergence.PROBES
    assert tuple(divergence.ESTIMATES) == ("exact", "rademacher", "gaussian")
    assert set(divergence.ESTIMATES) <= set(divergence.DIVERGENCES)


def test_public_names():
    """``sde_lib.__all__``: the registries beside every name exported before."""
    old = {
        "AbstractSDE", "BrownianMotionSDE", "CosineVPSDE", "DDPMChain", "DiscreteVPSDE",
        "GUIDANCE", "GaussianLaw", "GaussianMixture", "LinearSDE", "LossConfig", "NegativeELBO",
        "OrnsteinUhlenbeckSDE", "PARAMETERIZATIONS", "Parameterization", "ReverseSDE",
        "SAMPLERS", "Sweep", "VESDE", "VPSDE", "anisotropic_mixture_2d", "asymmetric_mixture_2d",
        "bits_per_dim", "conditional_sample", "convert", "coupled_error", "ddpm_negative_elbo",
        "debug_checks", "discretized_gaussian_log_likelihood", "evaluation", "flow_kl",
        "flow_limit_kl", "gaussian_kl", "gaussian_log_likelihood", "gaussian_pair",
        "gaussian_sampler_law", "get_loss_fn", "get_parameterization", "grid_of_gaussians",
        "guided_score_fn", "inverse", "log_likelihood", "losses", "mmd_test", "mode_errors",
        "posterior_moments", "ring_of_gaussians", "sample", "sampling", "subVPSDE",
        "tweedie_covariance", "tweedie_mean", "uniform_dequantize"}
    assert set(sde_lib.__all__) == old | {"SDES", "get_sde", "MixtureMMD", "mixture_mmd"}
    assert len(sde_lib.__all__) == len(set(sde_lib.__all__))
    for name in sde_lib.__all__:
        assert hasattr(sde_lib, name), name
    assert set(sde_lib.sampling.__all__) == {
        "GridCoeffs", "PREDICTORS", "SAMPLERS", "Sampler", "Sweep", "TIME_GRIDS",
        "build_sampler", "evaluation_times", "get_sampler", "loop_steps", "register", "sample",
        "scan_steps"}
