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
