"""The main job on a tiny setting, and its sample-quality measures against closed forms."""

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from experiments import common, compare_samplers
from experiments.configs import compare_samplers as compare_samplers_config
from sde_lib import evaluation
from tests._configs import tiny
from tests._sde_cases import Z
from trainer.config import experiment_config

METHODS = tuple(sde_lib.SAMPLERS)


def test_sliced_wasserstein_of_a_shift():
    """SW_2(x, x + m) = sqrt(E_theta (theta^T m)^2) = |m| / sqrt(d) for theta uniform on the
    sphere; with P projections the estimate of E (theta^T m)^2 has standard error
    sqrt(Var / P), Var = |m|^4 (E cos^4 - (E cos^2)^2) = |m|^4 (3/(d(d+2)) - 1/d^2)."""
    d, P = 3, 4096
    m = np.array([1.0, -2.0, 0.5])
    x = np.asarray(jax.random.normal(jax.random.key(0), (500, d)))
    sw = common.sliced_wasserstein(x, x + m, jax.random.key(1), num_projections=P)
    m2 = m @ m
    se = math.sqrt(m2**2 * (3 / (d * (d + 2)) - 1 / d**2) / P)
    assert abs(sw**2 - m2 / d) < Z * se
    assert common.sliced_wasserstein(x, x, jax.random.key(1)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        common.sliced_wasserstein(x, x[:10], jax.random.key(1))


def test_mode_weights_and_nll_against_the_oracle():
    gmm = sde_lib.asymmetric_mixture_2d()
    x = np.asarray(gmm.sample(jax.random.key(2), 20000))
    np.testing.assert_allclose(common.mean_nll(gmm, x),
                               -float(np.mean(np.asarray(gmm.log_prob(x)))) / 2, rtol=1e-10)
    # components 20 standard deviations apart: misassignment has probability ~1e-88
    far = sde_lib.GaussianMixture(np.array([0.2, 0.8]), np.array([[-10.0, 0.0], [10.0, 0.0]]),
                                  np.stack([np.eye(2)] * 2))
    y = np.asarray(far.sample(jax.random.key(3), 20000))
    w = common.mode_weights(far, y)
    se = np.sqrt(0.2 * 0.8 / 20000)
    np.testing.assert_array_less(np.abs(w - [0.2, 0.8]), Z * se)


@pytest.mark.slow
def test_main_job_tiny(tmp_path):
    """All samplers at two NFE targets with two briefly trained models (two sampling seeds each)
    and the exact score: one row per (score, sampler, NFE) with its mean and sd over the runs,
    and Euler-Maruyama at the reference steps, files written; with the exact score the errors
    shrink with NFE (averaged over the samplers that ran at both); the deterministic samplers'
    KL by change of variables falls with NFE; the exact Gaussian KL falls with NFE for every
    affine or deterministic sampler and is ``sde_lib.evaluation``'s; the deterministic samplers'
    limit KL(prior || p_T) is reported (and Heun at 1000 steps reaches it); the summary says at
    which NFE each sampler reaches the reference."""
    config = tiny(compare_samplers_config, dict(dims=(2,), nfes=(10, 100), num_samples=1000,
                                                num_heldout=20, train_seeds=(0, 1),
                                                sample_seeds=2, reference_steps=200,
                                                methods=METHODS), **{
        "training.num_train_steps": 100, "training.checkpoint_every": 100})
    paths = compare_samplers.compare_samplers(config, str(tmp_path))
    for name in ("results.csv", "results.md", "summary.md", "likelihood.md", "likelihood.csv",
                 "gaussian.csv", "gaussian.md", "quality_vs_nfe.png", "samples_2d.png"):
        assert (tmp_path / name).stat().st_size > 0, name
        assert paths[name] == str(tmp_path / name)
    rows = list(csv.DictReader(open(paths["results.csv"])))
    runs = [(r["score"], r["sampler"], r["nfe_target"]) for r in rows if r["sampler"] != "-"]
    assert sorted(runs) == sorted([(s, m, str(n)) for s in ("model", "exact")
                                   for m in METHODS for n in (10, 100)]
                                  + [(s, "euler_maruyama", "200") for s in ("model", "exact")])
    exact = {(r["sampler"], int(r["nfe_target"])): float(r["sw2"]) for r in rows
             if r["score"] == "exact" and r["sw2"]}
    both = [m for m in METHODS if (m, 10) in exact and (m, 100) in exact]
    assert len(both) >= 6
    coarse = np.mean([exact[(m, 10)] for m in both])
    fine = np.mean([exact[(m, 100)] for m in both])
    assert fine < coarse, (coarse, fine)
    assert "n/a" in open(paths["results.md"]).read()  # reverse diffusion at 10 steps on VP
    counts = {(r["score"], r["sampler"]): r["runs"] for r in rows if r["runs"]}
    assert counts[("model", "euler_maruyama")] == "4" and counts[("exact", "ddim")] == "2"
    assert all(r["sw2_sd"] for r in rows if r["runs"])
    flow = {(r["sampler"], int(r["nfe_target"])): float(r["kl"]) for r in rows
            if r["score"] == "exact" and r["kl"]}
    assert {m for m, _ in flow} == {m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive
                                    and s.deterministic(s.check_options({}))}
    assert {"pf_ode_euler", "pf_ode_heun", "ddim", "dpm_solver_pp", "unipc"} <= {m for m, _ in flow}
    assert all(flow[(m, 100)] < flow[(m, 10)] for m, _ in flow), flow
    kl_runs = {r["score"]: r["kl_runs"] for r in rows if r["kl"]}
    assert kl_runs == {"model": "2", "exact": "1"}  # the first sampling seed of each score
    floor = [r for r in rows if r["score"] == "exact samples"][0]
    assert 0 < float(floor["flow_limit"]) < 0.01 and float(floor["flow_limit_se"]) > 0
    gaussian = list(csv.DictReader(open(paths["gaussian.csv"])))
    kl = {(r["sampler"], int(r["nfe_target"])): float(r["kl_nats"]) for r in gaussian
          if r["kl_nats"]}
    affine = [m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive
              and (s.affine or s.deterministic(s.check_options({})))]
    assert {m for m, _ in kl} == set(affine) and ("euler_maruyama", 200) in kl
    assert all(kl[(m, 100)] < kl[(m, 10)] for m in affine if (m, 10) in kl), kl
    exp = experiment_config(compare_samplers.ComparisonConfig, config)
    mean = jax.random.normal(jax.random.key(exp.seed), (exp.gaussian_dim,))
    var = jnp.geomspace(*exp.gaussian_var, exp.gaussian_dim)
    law = evaluation.gaussian_sampler_law(sde_lib.VPSDE(), mean, var, "ddim", 100)
    want = float(evaluation.gaussian_kl(law, evaluation.GaussianLaw(mean, var)))
    np.testing.assert_allclose(kl[("ddim", 100)], want, rtol=1e-3)
    summary = open(paths["summary.md"]).read()
    assert summary.count("NFE to EM-200") == 3  # model and exact sW2 tables, the Gaussian one
    # the exact sW2 and flow-KL tables, the Gaussian one
    assert summary.count("KL(prior || p_T)") == 3
    limit = compare_samplers.gaussian_flow_limit(sde_lib.VPSDE(), exp)
    heun = evaluation.gaussian_sampler_law(sde_lib.VPSDE(), mean, var, "pf_ode_heun", 1000)
    heun_kl = float(evaluation.gaussian_kl(heun, evaluation.GaussianLaw(mean, var)))
    assert abs(heun_kl - limit) < 0.01 * limit, (heun_kl, limit)  # Heun converges to it
    assert f"{limit:.3g}" in summary and "NFE to 1.5 x flow limit" in summary


def test_bad_config(tmp_path):
    for change, message in (({"methods": ("heun",)}, "are not samplers"),
                            ({"nfes": (1, 10)}, "nfes must be integers >= 2"),
                            ({"dims": ()}, "dims must be integers >= 1"),
                            ({"train_seeds": ()}, "train_seeds must be"),
                            ({"gaussian_var": (1.0, 0.1)}, "gaussian_var must be"),
                            ({"sample_seeds": 0}, "sample_seeds must be >= 1"),
                            ({"reference_steps": -1}, "reference_steps must be >= 0")):
        with pytest.raises(ValueError, match=message):
            compare_samplers.run(tiny(compare_samplers_config, change), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="training.batch_size"):
        compare_samplers.run(tiny(compare_samplers_config, **{"training.batch_size": 12}),
                             str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
