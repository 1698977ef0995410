"""``experiments.testbeds``' reports: the runs' spread by group, the claims between samplers
(the floor among them) and the generated headline table (the module end to end is in
``test_experiment_modules``)."""

import math
import os
import shutil

import numpy as np
import pytest

import trainer
from experiments import claims, common, testbeds
from experiments.configs import testbeds as testbeds_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(testbed, score, sampler, nfe, se=0.01, groups=5, **means):
    row = {"testbed": testbed, "score": score, "sampler": sampler, "nfe_target": nfe,
           "groups": groups, "runs": groups}
    for name, mean in means.items():
        row.update({name: mean, f"{name}_se": se, f"{name}_sd": se * math.sqrt(groups)})
    return row


def test_summarize_groups_runs_by_training_seed():
    """Model runs grouped by training seed: the cell's mean is the mean of the groups' means
    and its standard error the spread between them (floored at the sampling's share); the
    runs' own Monte Carlo errors are kept as their largest."""
    rng = np.random.default_rng(0)
    runs = [{"group": g, "sw2": 1.0 + g + 0.01 * rng.normal(), "kl": 0.5, "kl_mc_se": 0.01 * g}
            for g in range(5) for _ in range(2)]
    out = testbeds._summarize(runs)
    means = [np.mean([r["sw2"] for r in runs if r["group"] == g]) for g in range(5)]
    assert out["groups"] == 5 and out["runs"] == 10
    assert out["sw2"] == pytest.approx(np.mean(means))
    assert out["sw2_se"] == pytest.approx(np.std(means, ddof=1) / math.sqrt(5))
    assert out["kl_mc_se"] == pytest.approx(0.04) and "path" not in out


def test_claims_compare_samplers_within_a_testbed_nfe_and_score():
    """Pairs only within (testbed, score, NFE); the floor joins the sliced W2 and mode-weight
    comparisons, not the KL; a sampler 3.1 SE of the difference above another is resolved, 2.9
    is not; the headline table names the lowest cell and, after ~, those not resolved from
    it."""
    d = 0.01 * math.sqrt(2)
    rows = [_row("pair", "exact samples", "-", 0, sw2=0.10, weight_err=0.01, groups=20),
            _row("pair", "exact", "ddim", 10, kl=0.5, sw2=0.10 + 3.1 * d,
                 weight_err=0.01 + 3.1 * d),
            _row("pair", "exact", "pf_ode_euler", 10, kl=0.5 + 2.9 * d, sw2=0.10 + 2.9 * d,
                 weight_err=0.01),
            _row("pair", "exact", "ddim", 20, kl=0.1, sw2=0.10),
            _row("pair", "exact", "euler_maruyama", 20, path=0.3, sw2=0.5),
            {**_row("pair", "exact", "reverse_diffusion", 10), "nfe": None}]
    made = testbeds.testbed_claims(rows)
    got = {(c["context"], c["metric"], c["a"], c["b"]): c["verdict"] for c in made}
    assert got == {
        ("pair / exact score / NFE 10", "KL to the data (nats)", "ddim", "pf_ode_euler"):
            "not resolved",
        ("pair / exact score / NFE 10", "sliced W2", "ddim", "pf_ode_euler"): "not resolved",
        ("pair / exact score / NFE 10", "sliced W2", "ddim", "exact samples"):
            "ddim above exact samples",
        ("pair / exact score / NFE 10", "sliced W2", "pf_ode_euler", "exact samples"):
            "not resolved",
        ("pair / exact score / NFE 10", "largest mode-weight error", "ddim", "pf_ode_euler"):
            "ddim above pf_ode_euler",
        ("pair / exact score / NFE 10", "largest mode-weight error", "ddim", "exact samples"):
            "ddim above exact samples",
        ("pair / exact score / NFE 10", "largest mode-weight error", "pf_ode_euler",
         "exact samples"): "not resolved",
        ("pair / exact score / NFE 20", "sliced W2", "ddim", "euler_maruyama"):
            "ddim below euler_maruyama",
        ("pair / exact score / NFE 20", "sliced W2", "ddim", "exact samples"): "not resolved",
        ("pair / exact score / NFE 20", "sliced W2", "euler_maruyama", "exact samples"):
            "euler_maruyama above exact samples"}
    table = testbeds.headline(made)
    assert table.splitlines()[2:] == [
        "| testbed | score | measure | 10 | 20 |", "|---|---|---|---|---|",
        "| pair | exact | KL to the data (nats) | ddim ~ pf_ode_euler | n/a |",
        "| pair | exact | sliced W2 | exact samples ~ pf_ode_euler | ddim ~ exact samples |",
        "| pair | exact | largest mode-weight error | pf_ode_euler ~ exact samples | n/a |"]


def test_reports_written_again_from_the_table(tmp_path):
    """``rewrite_reports`` makes the same summary, claims and headline from results.csv as the
    run wrote from its rows."""
    config = testbeds_config.get_config()
    config.experiment.testbeds = ("pair",)
    config.experiment.nfes = (10, 20)
    config.experiment.model_nfes = (10,)
    exp = trainer.experiment_config(testbeds.TestbedsConfig, config)
    rows = [_row("pair", "exact samples", "-", 0, sw2=0.1, weight_err=0.01, weight_z=0.9,
                 mean_err=0.05, mmd_reject=0.0, groups=20)]
    for m in exp.methods:
        for k, n in enumerate(exp.nfes):
            rows.append({**_row("pair", "exact", m, n, sw2=0.2 / (k + 1), weight_err=0.02,
                                weight_z=1.0, mean_err=0.1, mmd_reject=0.0), "nfe": n})
    common.write_table(str(tmp_path), "results", rows, testbeds.COLUMNS)
    first = {**testbeds.write_summary(str(tmp_path), rows, exp),
             **testbeds.write_claims(str(tmp_path), rows)}
    texts = {name: open(path).read() for name, path in first.items()}
    testbeds.rewrite_reports(config, str(tmp_path))
    for name, text in texts.items():
        assert open(first[name]).read() == text, name
    assert claims.readme_markers("testbeds", "experiments.testbeds.headline") == \
        testbeds.README_MARKERS


def test_committed_claims_follow_from_the_committed_table(tmp_path):
    """results/testbeds' summary, claims and headline are what the code makes of its committed
    results.csv (the default config's settings), and results/README.md quotes the headline
    between the markers."""
    committed = os.path.join(ROOT, "results", "testbeds")
    shutil.copy(os.path.join(committed, "results.csv"), tmp_path / "results.csv")
    testbeds.rewrite_reports(testbeds_config.get_config(), str(tmp_path))
    for name in ("claims.csv", "claims.md", "headline.md", "summary.md"):
        assert (tmp_path / name).read_text() == open(os.path.join(committed, name)).read(), name
    made = common.read_table(os.path.join(committed, "claims.csv"))
    readme = open(os.path.join(ROOT, "results", "README.md")).read()
    assert (claims.readme_block(readme, testbeds.README_MARKERS)
            == testbeds.headline(made).strip("\n"))
