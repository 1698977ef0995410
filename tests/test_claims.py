"""``experiments.claims``: cells over training seeds (``spread``, ``floored_se``), comparisons
resolved by the stated rule (|z| >= 3) on synthetic tables, and the README blocks."""

import csv
import math

import numpy as np
import pytest
from scipy import stats

from experiments import claims


def test_resolved_at_three_standard_errors_not_below():
    """Differences of 3.1 and -3.1 standard errors are resolved (above, below), 2.9 is not;
    the standard error of a difference combines both cells'."""
    se = 0.5  # each cell's: the difference's is 0.5 sqrt(2)
    d = se * 2**0.5
    above = claims.compare("NFE = 10", "KL", "heun", 1.0 + 3.1 * d, se, "euler", 1.0, se)
    below = claims.compare("NFE = 10", "KL", "heun", 1.0 - 3.1 * d, se, "euler", 1.0, se)
    close = claims.compare("NFE = 10", "KL", "heun", 1.0 + 2.9 * d, se, "euler", 1.0, se)
    assert above["verdict"] == "heun above euler" and above["z"] == pytest.approx(3.1)
    assert below["verdict"] == "heun below euler" and below["z"] == pytest.approx(-3.1)
    assert close["verdict"] == "not resolved" and close["se"] == pytest.approx(d)


def test_pairwise_within_context_and_written_whole(tmp_path):
    """Pairs are formed within each context only (3 samplers at 2 NFE: 2 x 3 pairs); the files
    state the rule and the counts, one line per comparison, and the CSV holds every column."""
    rows = [{"nfe": n, "sampler": s, "kl": m, "se": 0.01}
            for n, ms in ((10, (0.50, 0.30, 0.31)), (20, (0.20, 0.10, 0.105)))
            for s, m in zip(("euler", "heun", "dpm"), ms, strict=True)]
    made = claims.pairwise(rows, "sampler", "kl", "se", context=("nfe",))
    assert len(made) == 6 and {c["context"] for c in made} == {"nfe = 10", "nfe = 20"}
    verdicts = {(c["context"], c["a"], c["b"]): c["verdict"] for c in made}
    assert verdicts["nfe = 10", "euler", "heun"] == "euler above heun"
    assert verdicts["nfe = 10", "heun", "dpm"] == "not resolved"
    md, path = claims.write_claims(str(tmp_path), made)
    text = open(md).read()
    assert text.startswith("# Claims (6 comparisons, 4 resolved)") and claims.RULE in text
    assert "- nfe = 20: kl: heun vs dpm not resolved (heun 0.1, dpm 0.105;" in text
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and tuple(table[0]) == claims.COLUMNS


def test_threshold_read_with_the_same_rule():
    """The first NFE whose value is not resolved above the target (0.10 +- 0.01): 0.20 +- 0.01
    is (z = 7.1), 0.13 +- 0.01 is not (z = 2.1), although its point estimate is above."""
    points = [(10, 0.40, 0.01), (20, 0.20, 0.01), (50, 0.13, 0.01), (100, 0.10, 0.01)]
    assert claims.first_reaching(points, 0.10, 0.01) == 50
    assert claims.first_reaching(points[:2], 0.10, 0.01) is None


def test_rerun_interval_holds_a_rerun_95_percent_of_the_time():
    """Two independent 5-seed means of the same normal cells: the second lands in the first's
    ``mean +- rerun_halfwidth(se, 5)`` with probability 0.95 (20,000 simulated pairs: the
    coverage's standard error is 0.0015, the tolerance 4 of them); with ``+- 2 se`` it would
    not (about 0.80)."""
    rng = np.random.default_rng(0)
    n, reps = 5, 20_000
    first, second = rng.normal(size=(2, reps, n))
    se = first.std(axis=1, ddof=1) / np.sqrt(n)
    half = claims.rerun_halfwidth(1.0, n) * se  # linear in the SE (checked on a few)
    for k in range(5):
        assert claims.rerun_halfwidth(float(se[k]), n) == pytest.approx(half[k], rel=1e-12)
    inside = np.abs(second.mean(1) - first.mean(1)) <= half
    assert abs(inside.mean() - 0.95) < 4 * np.sqrt(0.95 * 0.05 / reps)
    assert np.mean(np.abs(second.mean(1) - first.mean(1)) <= 2 * se) < 0.85
    assert claims.rerun_halfwidth(None, 5) is None and claims.rerun_halfwidth(0.1, 1) is None


def test_rerun_interval_for_a_rerun_of_another_size():
    """10 committed seeds against a 5-seed re-run: the re-run's mean lands in ``mean +-
    rerun_halfwidth(se, 10, 5)`` with probability 0.95 (20,000 simulated pairs, tolerance 4
    standard errors of the coverage), where the equal-size interval ``(se, 10)`` holds it with
    probability ``P(|t_9| <= t_{0.975, 9} sqrt(2 / 3)) = 0.902``; ``n_rerun = n`` is the
    default."""
    rng = np.random.default_rng(1)
    reps = 20_000
    first, second = rng.normal(size=(reps, 10)), rng.normal(size=(reps, 5))
    se = first.std(axis=1, ddof=1) / np.sqrt(10)
    gap = np.abs(second.mean(1) - first.mean(1))
    inside = gap <= claims.rerun_halfwidth(1.0, 10, 5) * se
    assert abs(inside.mean() - 0.95) < 4 * np.sqrt(0.95 * 0.05 / reps)
    t = stats.t.ppf(0.975, 9)
    narrow = 2 * stats.t.cdf(t * np.sqrt(2 / 3), 9) - 1
    assert abs(np.mean(gap <= claims.rerun_halfwidth(1.0, 10) * se) - narrow) < 4 * np.sqrt(
        narrow * (1 - narrow) / reps)
    assert claims.rerun_halfwidth(0.3, 5, 5) == claims.rerun_halfwidth(0.3, 5)


def test_rerun_coverage_counts_the_cells_inside():
    """Cells with a mean and standard error are counted (CSV strings as well as numbers), a
    cell without a standard error or a re-run row is not; inside means within the re-run
    interval (t_{0.975, 4} sqrt(2) = 3.93 standard errors for 5 groups)."""
    committed = [{"k": 1, "m": 1.0, "m_se": 0.1, "groups": 5},
                 {"k": 2, "m": 1.0, "m_se": 0.1, "groups": 5},
                 {"k": 3, "m": 1.0, "m_se": None, "groups": 5},
                 {"k": 4, "m": 1.0, "m_se": 0.1, "groups": 5}]
    rerun = [{"k": "1", "m": "1.39"}, {"k": "2", "m": "0.60"}, {"k": "3", "m": "1.0"}]
    assert claims.rerun_coverage(committed, rerun, ["k"], ["m"], "groups") == (1, 2)
    # a re-run of 2 groups is noisier: t_{0.975, 4} sqrt(1 + 5 / 2) = 5.20 standard errors
    rerun[1]["groups"] = "2"
    assert claims.rerun_coverage(committed, rerun, ["k"], ["m"], "groups") == (2, 2)


def test_leaders_names_the_lowest_and_what_is_not_resolved_from_it():
    """Three items per context: a lowest, b resolved above it (z = 5), c not (z = 2); in a
    second context nothing is resolved; context-free claims name the metric alone."""
    made = [claims.compare("NFE 10", "KL", "a", 0.1, 0.01, "b", 0.1 + 5 * math.sqrt(2) * 0.01,
                           0.01),
            claims.compare("NFE 10", "KL", "a", 0.1, 0.01, "c", 0.1 + 2 * math.sqrt(2) * 0.01,
                           0.01),
            claims.compare("NFE 10", "KL", "b", 0.17, 0.01, "c", 0.13, 0.01),
            claims.compare("NFE 20", "KL", "a", 0.2, 0.1, "b", 0.1, 0.1),
            claims.compare("", "NLL", "x", 1.0, 0.01, "y", 2.0, 0.01)]
    as_csv = [{k: str(v) for k, v in c.items()} for c in made]
    for rows in (made, as_csv):
        assert claims.leaders(rows) == [
            "- NFE 10, KL: lowest a (0.1), not resolved from it: c; 1 of 2 resolved above it.",
            "- NFE 20, KL: none of 2 resolved from the lowest mean (b, 0.1).",
            "- NLL: lowest x (1); 1 of 1 resolved above it."]


def test_readme_block_replaced_whole_between_its_markers(tmp_path):
    markers = claims.readme_markers("study", "experiments.study.headline")
    assert markers[0].startswith("<!-- study claims: generated by experiments.study.headline "
                                 "from results/study/claims.csv")
    path = tmp_path / "README.md"
    path.write_text(f"# R\n\nbefore\n{markers[0]}\n- old\n{markers[1]}\nafter\n")
    claims.replace_readme_block(str(path), markers, "- new 1\n- new 2\n")
    text = path.read_text()
    assert text == f"# R\n\nbefore\n{markers[0]}\n- new 1\n- new 2\n{markers[1]}\nafter\n"
    assert claims.readme_block(text, markers) == "- new 1\n- new 2"
    with pytest.raises(ValueError, match="end of the generated study claims"):
        claims.readme_block(f"{markers[0]}\n- x\n", markers)
    path.write_text("no markers\n")
    with pytest.raises(ValueError, match="exactly once"):
        claims.replace_readme_block(str(path), markers, "- y")
    assert path.read_text() == "no markers\n"


def test_spread_between_training_seeds_and_within():
    """A cell's mean is the mean of its groups' means, its standard error the sd of those
    means over sqrt(groups), and the within-group sd the pooled sd of the runs around their
    group's mean (computed here by hand); a non-finite run makes the cell inf."""
    values = {0: [1.0, 1.4], 1: [2.0, 2.2], 2: [0.5, 0.9]}
    runs = [{"group": g, "m": v} for g, vs in values.items() for v in vs]
    means = [1.2, 2.1, 0.7]
    got = claims.spread(runs, "m")
    assert got["m"] == pytest.approx(4.0 / 3)
    sd = math.sqrt(sum((m - 4.0 / 3) ** 2 for m in means) / 2)
    assert got["m_sd"] == pytest.approx(sd) and got["m_se"] == pytest.approx(sd / math.sqrt(3))
    within = (0.2**2 * 2 + 0.1**2 * 2 + 0.2**2 * 2) / 3  # each group: 2 runs, 1 dof
    assert got["m_within_sd"] == pytest.approx(math.sqrt(within))
    single = claims.spread([{"group": 0, "m": 1.0}], "m")
    assert single["m_sd"] is None and single["m_within_sd"] is None
    bad = claims.spread(runs + [{"group": 3, "m": math.inf}], "m")
    assert bad["m"] == math.inf and bad["m_se"] is None


def test_spread_floors_the_standard_error_at_the_sampling_share():
    """Group means closer together than their own sampling noise allows (sd 0.05 between, runs
    1 apart within): the standard error is the sampling's share, within_sd / sqrt(runs per
    group) / sqrt(groups), not the between-groups sd's."""
    values = {0: [0.0, 2.0], 1: [0.05, 2.05], 2: [0.1, 2.1]}
    runs = [{"group": g, "m": v} for g, vs in values.items() for v in vs]
    got = claims.spread(runs, "m")
    assert got["m_sd"] == pytest.approx(0.05)
    assert got["m_within_sd"] == pytest.approx(math.sqrt(2.0))  # each pair: var 2
    assert got["m_se"] == pytest.approx(math.sqrt(2.0 / 2) / math.sqrt(3))
    assert claims.floored_se(0.3, 0.1, 2, 4) == pytest.approx(0.15)
    assert claims.floored_se(None, 0.1, 2, 1) is None


def simulated_coverage_runs(rng, sd_train, sd_within, groups, per_group):
    """One cell's runs: a training effect per group plus sampling noise per run."""
    effects = rng.normal(0, sd_train, groups)
    return [{"group": g, "m": effects[g] + rng.normal(0, sd_within)}
            for g in range(groups) for _ in range(per_group)]


def test_floored_interval_keeps_its_coverage_when_training_adds_little():
    """With no training variance (the exact score's groups) and with a small one, 2000 pairs of
    5-group cells: a re-run's mean lands inside the first's rerun interval about 95% of the time
    (the floor only widens it: at least 0.95 - 4 SE), and the floor never makes it narrower
    than the plain between-groups one."""
    rng = np.random.default_rng(0)
    for sd_train in (0.0, 0.3):
        inside = 0
        for _ in range(2000):
            a = claims.spread(simulated_coverage_runs(rng, sd_train, 1.0, 5, 2), "m")
            b = claims.spread(simulated_coverage_runs(rng, sd_train, 1.0, 5, 2), "m")
            inside += abs(a["m"] - b["m"]) <= claims.rerun_halfwidth(a["m_se"], 5)
            assert a["m_se"] >= a["m_sd"] / math.sqrt(5) - 1e-15
        se = math.sqrt(0.95 * 0.05 / 2000)
        assert inside / 2000 >= 0.95 - 4 * se


def test_over_seeds_merges_one_run_per_seed():
    """Per key, the mean over the seeds' runs and the sd between them (by hand); the cell's
    standard error is sqrt(sd^2 / n + within^2) where the runs' own errors come from shared
    data, the between-seeds one floored by the runs' own (rms) where they do not; one seed: its
    own error; a None in any run: no cell, and ``finite`` counts the runs with a value; columns
    that differ are listed, those of ``means`` averaged, the within column dropped."""
    runs = [{"k": "a", "m": m, "m_err": e, "nfe": nfe, "zeta": z, "train_seed": s}
            for s, (m, e, nfe, z) in enumerate([(1.0, 0.3, 10, 1.0), (2.0, 0.4, 12, 3.0),
                                                (4.0, 0.3, 14, 1.0)])]
    runs += [{"k": "b", "m": 5.0, "m_err": 0.2, "nfe": 9, "zeta": 1.0, "train_seed": 0},
             {"k": "c", "m": 1.0, "m_err": 0.1, "train_seed": 0},
             {"k": "c", "m": None, "m_err": None, "train_seed": 1}]
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    within = math.sqrt((0.09 + 0.16 + 0.09) / 3)
    for shared, se in ((True, math.sqrt(sd**2 / 3 + within**2)),
                       (False, math.sqrt(max(sd**2, within**2) / 3))):
        a, b, c = claims.over_seeds(runs, ("k",), [("m", "m_err", shared)], means=("nfe",))
        assert [a["k"], b["k"], c["k"]] == ["a", "b", "c"]
        assert a["m"] == pytest.approx(7 / 3) and a["m_seeds_sd"] == pytest.approx(sd)
        assert a["m_within"] == pytest.approx(within) and a["m_se"] == pytest.approx(se)
        assert a["nfe"] == pytest.approx(12.0) and a["zeta"] == "1 / 3 / 1"
        assert (a["finite"], a["train_seeds"]) == ("3/3", 3)
        assert "m_err" not in a and "train_seed" not in a
        assert (b["m"], b["m_se"], b["m_seeds_sd"], b["nfe"]) == (5.0, 0.2, None, 9)
        assert c["m"] is None and c["m_se"] is None and c["finite"] == "1/2"
    # a within error smaller than the seeds' spread: the spread decides, shared or not
    small = [dict(r, m_err=0.01) for r in runs[:3]]
    for shared in (True, False):
        cell = claims.over_seeds(small, ("k",), [("m", "m_err", shared)])[0]
        assert cell["m_se"] == pytest.approx(math.sqrt(sd**2 / 3 + (0.01**2 if shared else 0)))


def test_paired_differences_cancel_the_noise_two_cells_share():
    """Two cells measured on the same runs, each the shared noise plus a small gap of 0.1: from
    their own standard errors the gap is not resolved, from the paired differences (sd 0.01
    between seeds, by hand) it is; runs that do not pair up, a non-finite run or one group
    give no claim."""
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 1.0, (5, 2))
    noise = rng.normal(0, 0.01, (5, 2))
    runs_a = [{"group": g, "run": 2 * g + r, "m": shared[g, r]} for g in range(5) for r in (0, 1)]
    runs_b = [{"group": g, "run": 2 * g + r, "m": shared[g, r] + 0.1 + noise[g, r]}
              for g in range(5) for r in (0, 1)]
    a, b = claims.spread(runs_a, "m"), claims.spread(runs_b, "m")
    unpaired = claims.compare("", "m", "A", a["m"], a["m_se"], "B", b["m"], b["m_se"])
    assert unpaired["verdict"] == "not resolved"
    made = claims.paired("", "m", "A", runs_a, "B", runs_b, "m")
    d = -0.1 - noise
    between, within = d.mean(1).std(ddof=1), np.sqrt(d.var(1, ddof=1).mean())
    assert made["se"] == pytest.approx(math.sqrt(max(between**2, within**2 / 2) / 5))
    assert made["difference"] == pytest.approx(d.mean()) and made["verdict"] == "A below B"
    assert claims.paired("", "m", "A", runs_a, "B", runs_b[:-1], "m") is None
    bad = [dict(r, m=math.inf) if r["run"] == 0 else r for r in runs_b]
    assert claims.paired("", "m", "A", runs_a, "B", bad, "m") is None
    one = [r for r in runs_a if r["group"] == 0]
    assert claims.paired("", "m", "A", one, "B", [r for r in runs_b if r["group"] == 0],
                         "m") is None
