"""The main job on a tiny setting, and its sample-quality measures against closed forms."""

import csv
import math
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from experiments import claims, common, compare_samplers
from experiments.configs import compare_samplers as compare_samplers_config
from sde_lib import evaluation
from tests._configs import tiny
from tests._sde_cases import Z
from trainer import override
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


def _cell_row(sampler, nfe, mean, se, score="model"):
    return {"dim": 2, "score": score, "sampler": sampler, "nfe_target": nfe, "nfe": nfe,
            "mmd2": mean, "mmd2_se": se}


def test_headline_from_the_claims_alone():
    """The generated statements: at NFE 10, A's lead over B (3.1 SE) is resolved and over C
    (2.9 SE) is not; at NFE 20 nothing is; reaching EM-100: the first NFE not resolved above
    it; the same lines from the claims' CSV strings as from the claims themselves."""
    d = 0.01 * math.sqrt(2)
    rows = [_cell_row("a", 10, 0.10, 0.01), _cell_row("b", 10, 0.10 + 3.1 * d, 0.01),
            _cell_row("c", 10, 0.10 + 2.9 * d, 0.01),
            _cell_row("a", 20, 0.05, 0.01), _cell_row("b", 20, 0.06, 0.01),
            _cell_row("c", 20, 0.055, 0.01), _cell_row("euler_maruyama", 100, 0.06, 0.01)]
    exp = types.SimpleNamespace(dims=(2,), nfes=(10, 20), reference_steps=100,
                                gaussian_dim=16)
    gaussian = [{"sampler": "flow limit", "nfe_target": 0}]
    made = compare_samplers.sampler_claims(rows, gaussian, exp)
    text = compare_samplers.headline(made)
    assert ("- d = 2, model score, NFE 10, MMD^2: lowest a (0.1), not resolved from it: c; "
            "1 of 2 resolved above it.") in text
    assert ("- d = 2, model score, NFE 20, MMD^2: none of 3 resolved from the lowest mean "
            "(a, 0.05).") in text
    # against 0.06 +- 0.01 at NFE 10: a 0.10 (z = 2.8), b 0.144 (z = 5.9), c 0.141 (z = 5.7)
    assert ("- d = 2, model score, reaching EM-100, MMD^2: first NFE not resolved above "
            "EM-100: a 10, b 20, c 20.") in text
    as_csv = [{k: str(v) for k, v in c.items()} for c in made]
    assert compare_samplers.headline(as_csv) == text


def test_headline_counts_the_cells_where_the_model_score_is_resolved_above_the_exact_one():
    """Model against exact score per sampler and NFE, on MMD^2 and (where the rows have it) the
    flow KL: resolved at 3.1 SE, not at 2.9; the headline counts them per dimension and
    metric, with the means where resolved and the fewer of the cells resolved or not."""
    d = 0.01 * math.sqrt(2)

    def row(sampler, nfe, mean, score, kl=None):
        return {**_cell_row(sampler, nfe, mean, 0.01, score),
                **({"kl": kl, "kl_se": 0.01} if kl is not None else {})}
    rows = [row("a", 10, 0.10 + 3.1 * d, "model", kl=0.5), row("a", 10, 0.10, "exact", kl=0.1),
            row("b", 10, 0.10 + 2.9 * d, "model"), row("b", 10, 0.10, "exact")]
    exp = types.SimpleNamespace(dims=(2,), nfes=(10,), reference_steps=100, gaussian_dim=16)
    made = compare_samplers.sampler_claims(rows, [{"sampler": "flow limit"}], exp)
    scores = {(c["context"], c["metric"]): c["verdict"] for c in made
              if c["a"] == "model score"}
    assert scores == {("d = 2, a at NFE 10", "MMD^2"): "model score above exact score",
                      ("d = 2, a at NFE 10", "flow KL"): "model score above exact score",
                      ("d = 2, b at NFE 10", "MMD^2"): "not resolved"}
    text = compare_samplers.headline(made)
    assert ("- d = 2, MMD^2, model score against exact score: model above in 1 of 2 (sampler, "
            "NFE) cells (there model 0.14, exact 0.1): a at NFE 10."
            ) in text
    assert ("- d = 2, flow KL, model score against exact score: model above in 1 of 1 "
            "(sampler, NFE) cells (there model 0.5, exact 0.1).") in text


def test_committed_claims_and_summary_follow_from_the_committed_tables(tmp_path):
    """results/compare_samplers' claims.csv and summary.md are what ``sampler_claims`` and
    ``write_summary`` make of its results.csv and gaussian.csv under the config it was run
    with (the default with ``FULL_GRID``), so the claims are not edited by hand."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    committed = os.path.join(root, "results", "compare_samplers")
    exp = experiment_config(compare_samplers.ComparisonConfig, override(
        compare_samplers_config.get_config(), compare_samplers_config.FULL_GRID))
    rows, gaussian = compare_samplers.load_tables(committed)
    made = compare_samplers.sampler_claims(rows, gaussian, exp)
    with open(os.path.join(committed, "claims.csv")) as f:
        assert list(csv.DictReader(f)) == [{k: str(c[k]) for k in claims.COLUMNS}
                                           for c in made]
    compare_samplers.write_summary(str(tmp_path), rows, gaussian, exp)
    assert (tmp_path / "summary.md").read_text() == open(
        os.path.join(committed, "summary.md")).read()


def test_rerun_check_counts_a_moved_cell(tmp_path):
    """The committed run against itself: every cell inside; against a copy with one MMD^2 cell
    moved by 10 of its re-run half-widths: that one outside."""
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    committed = os.path.join(root, "results", "compare_samplers")
    same = compare_samplers.rerun_check(committed, committed)
    assert all(inside == cells > 0 for inside, cells in same.values()), same
    for name in ("results.csv", "gaussian.csv"):
        shutil.copy(os.path.join(committed, name), tmp_path / name)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["score"] == "model" and r["mmd2_se"])
    row["mmd2"] = str(float(row["mmd2"]) + 10 * claims.rerun_halfwidth(
        float(row["mmd2_se"]), int(row["groups"])))
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    moved = compare_samplers.rerun_check(committed, str(tmp_path))
    assert moved["mmd2"] == (same["mmd2"][0] - 1, same["mmd2"][1])
    assert {k: v for k, v in moved.items() if k != "mmd2"} == {
        k: v for k, v in same.items() if k != "mmd2"}


def test_readme_quotes_the_generated_claims():
    """results/README.md's block between the markers is what ``headline`` generates from the
    committed results/compare_samplers/claims.csv, line for line."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "results", "compare_samplers", "claims.csv")) as f:
        made = list(csv.DictReader(f))
    readme = open(os.path.join(root, "results", "README.md")).read()
    start, end = compare_samplers.README_MARKERS
    assert readme.count(start) == 1 and readme.count(end) == 1
    block = readme.split(start)[1].split(end)[0]
    assert block.strip("\n") == compare_samplers.headline(made).strip("\n")


@pytest.mark.slow
def test_main_job_tiny(tmp_path):
    """All samplers at two NFE targets with two briefly trained models (two sampling seeds each)
    and the exact score (two groups of two): one row per (score, sampler, NFE) with its mean
    and standard error over the groups; the exact samples' MMD^2 is zero within 4 standard
    errors; the claims and the headline generated from them written;
    and Euler-Maruyama at the reference steps, files written; with the exact score the errors
    shrink with NFE (averaged over the samplers that ran at both); the deterministic samplers'
    KL by change of variables falls with NFE; the exact Gaussian KL falls with NFE for every
    affine or deterministic sampler and is ``sde_lib.evaluation``'s; the deterministic samplers'
    limit KL(prior || p_T) is reported (and Heun at 1000 steps reaches it); the summary says at
    which NFE each sampler reaches the reference."""
    config = tiny(compare_samplers_config, dict(dims=(2,), nfes=(10, 100), num_samples=1000,
                                                num_heldout=20, train_seeds=(0, 1),
                                                sample_seeds=2, reference_steps=200,
                                                gaussian_seeds=2, methods=METHODS), **{
        "training.num_train_steps": 100, "training.checkpoint_every": 100})
    paths = compare_samplers.compare_samplers(config, str(tmp_path))
    for name in ("results.csv", "results.md", "summary.md", "likelihood.md", "likelihood.csv",
                 "gaussian.csv", "gaussian.md", "quality_vs_nfe.png", "sw2_vs_nfe.png",
                 "samples_2d.png", "claims.md", "claims.csv", "headline.md"):
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
    assert counts[("model", "euler_maruyama")] == "4" and counts[("exact", "ddim")] == "4"
    assert all(r["sw2_se"] and r["mmd2_se"] and r["groups"] == "2" for r in rows
               if r["runs"] and r["score"] != "exact samples" and r["sw2"] != "inf")
    flow = {(r["sampler"], int(r["nfe_target"])): float(r["kl"]) for r in rows
            if r["score"] == "exact" and r["kl"]}
    assert {m for m, _ in flow} == {m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive
                                    and s.deterministic(s.check_options({}))}
    assert {"pf_ode_euler", "pf_ode_heun", "ddim", "dpm_solver_pp", "unipc"} <= {m for m, _ in flow}
    assert all(flow[(m, 100)] < flow[(m, 10)] for m, _ in flow), flow
    kl_runs = {r["score"]: r["kl_runs"] for r in rows if r["kl"]}
    assert kl_runs == {"model": "2", "exact": "2"}  # the first sampling seed of each group
    floor = [r for r in rows if r["score"] == "exact samples"][0]
    assert 0 < float(floor["flow_limit"]) < 0.01 and float(floor["flow_limit_se"]) > 0
    assert abs(float(floor["mmd2"])) < Z * float(floor["mmd2_se"])
    made = list(csv.DictReader(open(paths["claims.csv"])))
    assert len(made) == open(paths["claims.md"]).read().count("\n- ") > 0
    assert open(paths["headline.md"]).read() == compare_samplers.headline(made)
    gaussian = list(csv.DictReader(open(paths["gaussian.csv"])))
    kl = {(r["sampler"], int(r["nfe_target"])): float(r["kl_nats"]) for r in gaussian[1:]
          if r["kl_nats"]}
    affine = [m for m, s in sde_lib.SAMPLERS.items() if not s.adaptive
              and (s.affine or s.deterministic(s.check_options({})))]
    assert {m for m, _ in kl} == set(affine) and ("euler_maruyama", 200) in kl
    assert all(kl[(m, 100)] < kl[(m, 10)] for m in affine if (m, 10) in kl), kl
    exp = experiment_config(compare_samplers.ComparisonConfig, config)
    var = jnp.geomspace(*exp.gaussian_var, exp.gaussian_dim)
    want, limits = [], []
    for seed in (exp.seed, exp.seed + 1):  # the table's mean over its two data means
        mean = jax.random.normal(jax.random.key(seed), (exp.gaussian_dim,))
        law = evaluation.gaussian_sampler_law(sde_lib.VPSDE(), mean, var, "ddim", 100)
        want.append(float(evaluation.gaussian_kl(law, evaluation.GaussianLaw(mean, var))))
        limits.append(compare_samplers.gaussian_flow_limit(sde_lib.VPSDE(), exp, seed))
    np.testing.assert_allclose(kl[("ddim", 100)], np.mean(want), rtol=1e-3)
    assert gaussian[0]["sampler"] == "flow limit"
    np.testing.assert_allclose(float(gaussian[0]["kl_nats"]), np.mean(limits), rtol=1e-6)
    summary = open(paths["summary.md"]).read()
    # the model's and the exact score's MMD^2 and sW2 tables, the Gaussian one
    assert summary.count("NFE to EM-200") == 5
    assert summary.count("KL(prior || p_T)") == 2  # the exact flow-KL table, the Gaussian one
    mean = jax.random.normal(jax.random.key(exp.seed), (exp.gaussian_dim,))
    limit = limits[0]
    heun = evaluation.gaussian_sampler_law(sde_lib.VPSDE(), mean, var, "pf_ode_heun", 1000)
    heun_kl = float(evaluation.gaussian_kl(heun, evaluation.GaussianLaw(mean, var)))
    assert abs(heun_kl - limit) < 0.01 * limit, (heun_kl, limit)  # Heun converges to it
    assert "NFE to 1.5 x flow limit" in summary
    # every run was kept (one directory per model and one for the exact score); a second run
    # in the workdir, with DDIM's runs deleted, makes only those again and writes the same table
    kept = sorted(tmp_path.glob("partial/*/*.json"))
    assert len({p.parent for p in kept}) == 3
    ddim = [p for p in kept if p.name.startswith("ddim_")]
    assert len(ddim) == 2 * 2 * 4  # (10, 100) x (model, exact) x 4 runs
    for p in ddim:
        p.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in kept if p not in ddim}
    compare_samplers.compare_samplers(config, str(tmp_path))
    assert sorted(tmp_path.glob("partial/*/*.json")) == kept
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    again = list(csv.DictReader(open(paths["results.csv"])))
    timing = ("wall_s", "compile_s")
    strip = lambda table: [{k: v for k, v in r.items() if k not in timing} for r in table]
    assert strip(again) == strip(rows)


def test_bad_config(tmp_path):
    for change, message in (({"methods": ("heun",)}, "are not samplers"),
                            ({"nfes": (1, 10)}, "nfes must be integers >= 2"),
                            ({"dims": ()}, "dims must be integers >= 1"),
                            ({"train_seeds": ()}, "train_seeds must be"),
                            ({"gaussian_var": (1.0, 0.1)}, "gaussian_var must be"),
                            ({"sample_seeds": 0}, "sample_seeds must be >= 1"),
                            ({"reference_steps": -1}, "reference_steps must be >= 0"),
                            ({"train_seeds": (0, 0)}, "train_seeds must be distinct"),
                            ({"mmd_bandwidths": (1.0, 0.0)}, "mmd_bandwidths must be positive"),
                            ({"gaussian_seeds": 0}, "gaussian_seeds must be >= 1"),
                            ({"num_samples": 2}, "num_samples must be >= 3")):
        with pytest.raises(ValueError, match=message):
            compare_samplers.run(tiny(compare_samplers_config, change), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="training.batch_size"):
        compare_samplers.run(tiny(compare_samplers_config, **{"training.batch_size": 12}),
                             str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_committed_standard_errors_follow_the_floor():
    """Every standard error in the committed results.csv is ``floored_se`` of the same row's sd
    columns (the runs per group from ``runs / groups``; the flow KL floored at ``kl_run_se``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows, _ = compare_samplers.load_tables(os.path.join(root, "results", "compare_samplers"))
    checked = 0
    for r in rows:
        for m in compare_samplers.METRICS:
            if f"{m}_sd" in r:
                want = claims.floored_se(r[f"{m}_sd"], r.get(f"{m}_within_sd"),
                                                   r["runs"] / r["groups"], r["groups"])
                assert r[f"{m}_se"] == pytest.approx(want, rel=1e-12), (r["sampler"], m)
                checked += 1
        if "kl_sd" in r:
            want = claims.floored_se(r["kl_sd"], r["kl_run_se"], 1, r["kl_runs"])
            assert r["kl_se"] == pytest.approx(want, rel=1e-12), (r["sampler"], "kl")
            checked += 1
    assert checked == 904


def test_an_adaptive_sampler_is_named_with_the_nfe_it_measured():
    """``pf_ode_adaptive``'s NFE columns are tolerances: the pairwise statements name it with
    the NFE it measured, "reaching" gives that NFE (and the column), and the model-against-exact
    cells carry both scores' measured NFE."""
    def row(sampler, nfe_target, nfe, mean, score="model"):
        return {**_cell_row(sampler, nfe_target, mean, 0.01, score), "nfe": nfe}
    rows = [row("pf_ode_adaptive", 10, 26, 0.30), row("pf_ode_adaptive", 20, 32, 0.05),
            row("pf_ode_adaptive", 20, 20, 0.01, "exact"), row("ddim", 10, 10, 0.20),
            row("ddim", 20, 20, 0.06), row("euler_maruyama", 100, 100, 0.06)]
    exp = types.SimpleNamespace(dims=(2,), nfes=(10, 20), reference_steps=100,
                                gaussian_dim=16)
    made = compare_samplers.sampler_claims(rows, [{"sampler": "flow limit"}], exp)
    text = compare_samplers.headline(made)
    assert ("- d = 2, model score, NFE 20, MMD^2: none of 2 resolved from the lowest mean "
            "(pf_ode_adaptive (32 NFE), 0.05).") in text
    pair = [c for c in made if c["context"] == "d = 2, model score, NFE 10"]
    assert [(c["a"], c["b"]) for c in pair] == [("pf_ode_adaptive (26 NFE)", "ddim")]
    assert ("- d = 2, model score, reaching EM-100, MMD^2: first NFE not resolved above "
            "EM-100: pf_ode_adaptive 32 (the NFE-20 tolerance), ddim 20.") in text
    scores = [c["context"] for c in made if c["a"] == "model score"]
    assert scores == ["d = 2, pf_ode_adaptive at NFE 20 (32 / 20 measured)"]
    as_csv = [{k: str(v) for k, v in c.items()} for c in made]
    assert compare_samplers.headline(as_csv) == text
