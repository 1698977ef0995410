"""``experiments.compare_losses``' reports: the tables with their re-run intervals, the claims
between losses and the README's generated block (the module end to end is in
``test_experiment_modules``)."""

import csv
import math
import os

import pytest

from experiments import claims, common, compare_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "results", "compare_losses")


def _row(loss, base, se, groups=5):
    row = {"loss": loss, "groups": groups, "runs": 2 * groups, "config": f"loss.name={loss}"}
    for k, m in enumerate(compare_losses.METRICS):
        row.update({m: base + k, f"{m}_se": se, f"{m}_sd": se * math.sqrt(groups),
                    f"{m}_within_sd": 0.0})
    return row


def test_claims_compare_every_pair_of_losses_on_every_metric(tmp_path):
    """Three losses (the exact score left out) give 3 pairs per metric; a loss 3.1 SE of the
    difference above another is resolved, 2.9 is not; a diverged (inf) metric drops out of that
    metric's pairs; the headline names the lowest per metric; the markdown prints mean +- the
    95% re-run half-width."""
    d = 0.01 * math.sqrt(2)
    rows = [_row("exact score", 0.0, 0.0), _row("a", 1.0, 0.01), _row("b", 1.0 + 3.1 * d, 0.01),
            _row("c", 1.0 + 2.9 * d, 0.01)]
    rows[3]["sw2_heun"] = math.inf
    made = compare_losses.loss_claims(rows)
    assert len(made) == 3 * len(compare_losses.METRICS) - 2
    nll = {(c["a"], c["b"]): c["verdict"] for c in made if c["metric"] == "PF-ODE NLL (bits/dim)"}
    assert nll == {("a", "b"): "a below b", ("a", "c"): "not resolved",
                   ("b", "c"): "not resolved"}
    text = compare_losses.headline(made)
    assert text.splitlines()[0] == ("- PF-ODE NLL (bits/dim): lowest a (1), not resolved from "
                                    "it: c; 1 of 2 resolved above it.")
    assert "- sliced W2, Heun 50: lowest a (5), not resolved from it: b." not in text
    assert len(text.splitlines()) == len(compare_losses.METRICS)
    paths = compare_losses.write_tables(str(tmp_path), rows)
    table = (tmp_path / "losses.md").read_text()
    h = claims.rerun_halfwidth(0.01, 5)
    assert f"| a | 5 | {common.pm(1.0, h)} |" in table
    assert common.read_table(paths["losses.csv"])[1]["nll_bpd_se"] == pytest.approx(0.01)


def test_committed_claims_follow_from_the_committed_table(tmp_path):
    """results/compare_losses' claims (paired, from its runs.csv), headline and markdown are
    what the code makes of its committed losses.csv and runs.csv, and results/README.md quotes
    the headline between the markers."""
    rows = common.read_table(os.path.join(COMMITTED, "losses.csv"))
    for name in ("losses.csv", "runs.csv"):
        (tmp_path / name).write_bytes(open(os.path.join(COMMITTED, name), "rb").read())
    compare_losses.rewrite_reports(str(tmp_path), rows[-1]["groups"])
    for name in ("claims.csv", "claims.md", "headline.md", "losses.md"):
        assert (tmp_path / name).read_text() == open(os.path.join(COMMITTED, name)).read(), name
    with open(os.path.join(COMMITTED, "claims.csv")) as f:
        made = list(csv.DictReader(f))
    readme = open(os.path.join(ROOT, "results", "README.md")).read()
    assert (claims.readme_block(readme, compare_losses.README_MARKERS)
            == compare_losses.headline(made).strip("\n"))
