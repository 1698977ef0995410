"""``experiments.inverse_problems``' reports: the claims between guidances and the README's
generated block (the module end to end is in ``test_experiment_modules``)."""

import csv
import math
import os

from experiments import claims, common, inverse_problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "results", "inverse_problems")


def _row(guidance, sigma_y, score, w2, se, y=0.5):
    row = {"y": y, "sigma_y": sigma_y, "guidance": guidance, "score": score, "finite": "10/10",
           "groups": 5, "runs": 10, "exact_mean_x2": 0.1, "w2_floor": 0.05}
    for m in inverse_problems.METRICS:
        row.update({m: w2, f"{m}_se": se, f"{m}_sd": se * math.sqrt(5), f"{m}_within_sd": se})
    return row


def test_guidances_are_compared_within_their_own_posterior():
    """Rows of one (y, sigma_y) and score are compared pairwise on W2 and |mean error|; a
    guidance at another sigma_y (another posterior) is not compared with them; the model is
    compared with the exact score per guidance; a row with no finite run drops out; the
    headline leaves the model-vs-exact lines out."""
    d = 0.01 * math.sqrt(2)
    rows = [_row("dps", 0.2, "exact", 0.1, 0.01), _row("pigdm", 0.2, "exact", 0.1 + 3.1 * d, 0.01),
            _row("projection", 0.0, "exact", 0.5, 0.01), _row("dps", 0.2, "model", 0.2, 0.01),
            {**_row("pigdm", 0.2, "model", 0, 0), "finite": "0/10", "w2_x2": None,
             "abs_mean_err_x2": None}]
    made = inverse_problems.inverse_claims(rows)
    pairs = [(c["context"], c["metric"], c["verdict"]) for c in made]
    assert pairs == [
        ("y = 0.5, sigma_y = 0.2, exact score", "sliced W2 of x_2", "dps below pigdm"),
        ("y = 0.5, sigma_y = 0.2, exact score", "|mean error of x_2|", "dps below pigdm"),
        ("y = 0.5, sigma_y = 0.2, dps", "sliced W2 of x_2", "model score above exact score")]
    assert inverse_problems.headline(made).splitlines() == [
        "- y = 0.5, sigma_y = 0.2, exact score, sliced W2 of x_2: lowest dps (0.1); 1 of 1 "
        "resolved above it.",
        "- y = 0.5, sigma_y = 0.2, exact score, |mean error of x_2|: lowest dps (0.1); 1 of 1 "
        "resolved above it."]


def test_committed_claims_follow_from_the_committed_table(tmp_path):
    """results/inverse_problems' claims, headline and markdown are what the code makes of its
    committed inverse.csv, and results/README.md quotes the headline between the markers."""
    (tmp_path / "inverse.csv").write_bytes(open(os.path.join(COMMITTED, "inverse.csv"),
                                                "rb").read())
    inverse_problems.rewrite_reports(str(tmp_path))
    for name in ("claims.csv", "claims.md", "headline.md", "inverse.md"):
        assert (tmp_path / name).read_text() == open(os.path.join(COMMITTED, name)).read(), name
    with open(os.path.join(COMMITTED, "claims.csv")) as f:
        made = list(csv.DictReader(f))
    readme = open(os.path.join(ROOT, "results", "README.md")).read()
    assert (claims.readme_block(readme, inverse_problems.README_MARKERS)
            == inverse_problems.headline(made).strip("\n"))
    assert common.read_table(os.path.join(COMMITTED, "inverse.csv"))[0]["groups"] == 5


def _moved_copy(source, tmp_path, name, key, metric, groups=None):
    """A copy of ``source``'s ``name`` table in ``tmp_path`` with the first row that has a
    standard error on ``metric`` (and ``key(row)``) moved by 10 of its re-run half-widths."""
    with open(os.path.join(source, name)) as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if key(r) and r[f"{metric}_se"])
    n = groups or int(row["groups"])
    row[metric] = str(float(row[metric]) + 10 * claims.rerun_halfwidth(float(row[f"{metric}_se"]),
                                                                       n))
    with open(tmp_path / name, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_rerun_check_counts_a_moved_cell(tmp_path):
    """The committed run against itself: every cell with an interval inside; against a copy with
    one model W2 cell moved by 10 of its re-run half-widths: that one outside."""
    same = inverse_problems.rerun_check(COMMITTED, COMMITTED)
    assert all(inside == cells > 0 for inside, cells in same.values()), same
    _moved_copy(COMMITTED, tmp_path, "inverse.csv", lambda r: r["score"] == "model", "w2_x2")
    moved = inverse_problems.rerun_check(COMMITTED, str(tmp_path))
    assert moved["w2_x2"] == (same["w2_x2"][0] - 1, same["w2_x2"][1])
    assert {k: v for k, v in moved.items() if k != "w2_x2"} == {
        k: v for k, v in same.items() if k != "w2_x2"}


def test_tweedie_rerun_check_counts_a_moved_cell(tmp_path):
    """``tweedie.rerun_check`` likewise, over the 5 training seeds of results/tweedie."""
    from experiments import tweedie

    committed = os.path.join(ROOT, "results", "tweedie")
    same = tweedie.rerun_check(committed, committed, 5)
    assert all(inside == cells > 0 for inside, cells in same.values()), same
    _moved_copy(committed, tmp_path, "tweedie.csv", lambda r: True, "model_cov_err", groups=5)
    moved = tweedie.rerun_check(committed, str(tmp_path), 5)
    assert moved == {**same, "model_cov_err": (same["model_cov_err"][0] - 1,
                                               same["model_cov_err"][1])}
