"""``experiments.claims``: comparisons resolved by the stated rule (|z| >= 3), on a synthetic
table."""

import csv

import numpy as np
import pytest

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
    half = np.array([claims.rerun_halfwidth(float(s), n) for s in se])
    inside = np.abs(second.mean(1) - first.mean(1)) <= half
    assert abs(inside.mean() - 0.95) < 4 * np.sqrt(0.95 * 0.05 / reps)
    assert np.mean(np.abs(second.mean(1) - first.mean(1)) <= 2 * se) < 0.85
    assert claims.rerun_halfwidth(None, 5) is None and claims.rerun_halfwidth(0.1, 1) is None


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
