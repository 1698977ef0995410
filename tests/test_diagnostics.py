"""The diagnostics' claims and headline on synthetic runs (the module end to end is in
test_experiment_modules): which cells pair, the paired standard error by hand, the exact
score's runs (no model) paired with every training seed's, the pc snrs against the floor and
the exact SDE table's lowest sampler against the rest."""

import math
import pathlib
import shutil

import numpy as np
import pytest

from experiments import claims, diagnostics


def _swap(window, group, run, value, dim=2, method="euler_maruyama"):
    row = {"table": "swap", "dim": dim, "method": method, "case": window, "nfe": 100,
           "run": run, "value": value}
    return row if group is None else {**row, "group": group}


def test_swap_claims_pair_the_exact_score_with_every_training_seed():
    """A window's runs are the exact score's plus a per-seed offset (the same for both sampling
    runs), so the paired difference's standard error is the offsets' sd / sqrt(seeds): resolved
    at a mean offset of 3.1 of them, not at 2.9; an unpaired comparison would see the runs'
    spread instead."""
    exact = [0.5, 0.9]  # two sampling runs; their spread is large against the offsets
    offsets = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])  # sd 1.58, se 0.707
    se = offsets.std(ddof=1) / math.sqrt(len(offsets))
    for target, resolved in ((3.1, True), (2.9, False)):
        shift = target * se - offsets.mean()
        runs = [_swap("all t", g, r, v + o + shift) for g, o in enumerate(offsets)
                for r, v in enumerate(exact)]
        runs += [_swap(diagnostics.EXACT_WINDOW, None, r, v) for r, v in enumerate(exact)]
        (c,) = diagnostics.diagnostic_claims(runs)
        assert c["context"] == "d = 2, euler_maruyama, NFE 100"
        assert (c["a"], c["b"]) == ("all t", diagnostics.EXACT_WINDOW)
        assert c["se"] == pytest.approx(se, rel=1e-9)
        assert c["z"] == pytest.approx(target, rel=1e-9)
        assert (c["verdict"] == "all t above none (exact score)") is resolved
        assert c["mean_b"] == pytest.approx(np.mean(exact))


def test_score_error_pc_floor_and_sde_claims_and_their_headline():
    """The score error at the first time against each later one (paired by training seed); pc
    snrs paired by run and against the floor unpaired (hypot of the two standard errors); on
    an SDE at an NFE the lowest sampler against every other, paired by data mean; the headline
    says so."""
    runs = []
    for g, base in enumerate([0.20, 0.26, 0.23]):
        runs += [{"table": "score_error", "dim": 2, "case": 0.01, "group": g, "run": 0,
                  "value": base},
                 {"table": "score_error", "dim": 2, "case": 0.5, "group": g, "run": 0,
                  "value": 0.001 + 0.001 * g},
                 {"table": "score_error", "dim": 2, "case": 1.0, "group": g, "run": 0,
                  "value": base - 0.01 * (g - 1)}]  # paired difference 0.01 * (g - 1): mean 0
    floor = [0.060, 0.062, 0.064]
    runs += [{"table": "floor", "dim": 16, "group": i, "run": 0, "value": v}
             for i, v in enumerate(floor)]
    pc = {0.01: [0.090, 0.088, 0.086], 0.16: [0.063, 0.061, 0.065]}
    runs += [{"table": "pc_snr", "dim": 16, "method": "pc", "case": snr, "nfe": 50, "group": r,
              "run": 0, "value": v} for snr, vs in pc.items() for r, v in enumerate(vs)]
    kl = {"ddim": [0.3, 0.5], "dpm_solver_2s": [0.01, 0.02], "pf_ode_euler": [0.011, 0.021]}
    runs += [{"table": "sdes", "dim": 16, "sde": "vp", "method": m, "nfe": 50, "group": s,
              "run": 0, "value": v} for m, vs in kl.items() for s, v in enumerate(vs)]
    made = diagnostics.diagnostic_claims(runs)
    by = {(c["context"], c["metric"], c["a"], c["b"]): c for c in made}
    assert len(made) == 2 + 1 + 2 + 2
    early = by["d = 2", "relative score error", "t = 0.01", "t = 0.5"]
    diffs = np.array([0.20 - 0.001, 0.26 - 0.002, 0.23 - 0.003])
    assert early["se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert early["verdict"] == "t = 0.01 above t = 0.5"
    assert by["d = 2", "relative score error", "t = 0.01", "t = 1"]["verdict"] == "not resolved"
    snr = by["d = 16, pc, NFE 50", "sliced W2", "snr 0.01", "snr 0.16"]
    d = np.subtract(pc[0.01], pc[0.16])
    assert snr["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    level = by["d = 16, pc, NFE 50", "sliced W2 against the floor", "snr 0.16", "floor"]
    sem = lambda v: np.std(v, ddof=1) / math.sqrt(len(v))  # noqa: E731
    assert level["se"] == pytest.approx(math.hypot(sem(pc[0.16]), sem(floor)))
    assert level["verdict"] == "not resolved"
    assert by["d = 16, pc, NFE 50", "sliced W2 against the floor", "snr 0.01",
              "floor"]["verdict"] == "snr 0.01 above floor"
    assert {(a, b) for (ctx, _, a, b) in by if ctx == "vp, NFE 50"} == {
        ("dpm_solver_2s", "ddim"), ("dpm_solver_2s", "pf_ode_euler")}
    text = diagnostics.headline(made)
    assert ("- d = 2: the relative score error at t = 0.01 (0.23) is resolved above its value "
            "at 1 of the 2 later times; not resolved at t = 1.") in text
    assert "- d = 16, pc, NFE 50: not resolved from the floor (0.062): snr 0.16; 1 of 2" in text
    assert "- vp, NFE 50, exact KL in nats: lowest dpm_solver_2s (0.015)" in text
    # the headline reads claims.csv's strings as it reads the numbers
    strings = [{k: str(v) for k, v in c.items()} for c in made]
    assert diagnostics.headline(strings) == text


def test_committed_diagnostics_follow_from_their_runs_and_the_readme_quotes_them(tmp_path):
    """results/diagnostics' tables, claims and headline are what ``rewrite_reports`` makes of
    its committed runs.csv, and results/README.md quotes the headline between its markers."""
    root = pathlib.Path(__file__).parents[1]
    committed = root / "results" / "diagnostics"
    shutil.copy(committed / "runs.csv", tmp_path / "runs.csv")
    paths = diagnostics.rewrite_reports(str(tmp_path))
    assert {"claims.csv", "headline.md", "swap.csv", "pc_snr.csv", "sdes.csv",
            "score_error.csv"} <= set(paths)
    for name in paths:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
    readme = (root / "results" / "README.md").read_text()
    assert (claims.readme_block(readme, diagnostics.README_MARKERS)
            == (committed / "headline.md").read_text().strip("\n"))
