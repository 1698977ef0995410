"""The re-run checks of the studies over training seeds (``rerun_check``): each counts the
committed cells a re-run with other seeds lands inside (``claims.rerun_coverage``), checked on
the committed tables against themselves and against a copy with one cell moved."""

import csv
import importlib
import os

import pytest

from experiments import claims

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    from experiments import inverse_problems

    committed = os.path.join(ROOT, "results", "inverse_problems")
    same = inverse_problems.rerun_check(committed, committed)
    assert all(inside == cells > 0 for inside, cells in same.values()), same
    _moved_copy(committed, tmp_path, "inverse.csv", lambda r: r["score"] == "model", "w2_x2")
    moved = inverse_problems.rerun_check(committed, str(tmp_path))
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


@pytest.mark.parametrize("module, table, key, metric", [
    ("testbeds", "results.csv", lambda r: r["score"] == "model", "sw2"),
    ("compare_losses", "losses.csv", lambda r: r["loss"] != "exact score", "nll_bpd")])
def test_other_modules_rerun_checks_count_a_moved_cell(tmp_path, module, table, key, metric):
    """``testbeds.rerun_check`` and ``compare_losses.rerun_check`` likewise."""
    mod = importlib.import_module(f"experiments.{module}")
    committed = os.path.join(ROOT, "results", module)
    same = mod.rerun_check(committed, committed)
    assert all(inside == cells > 0 for inside, cells in same.values()), same
    _moved_copy(committed, tmp_path, table, key, metric)
    moved = mod.rerun_check(committed, str(tmp_path))
    assert moved == {**same, metric: (same[metric][0] - 1, same[metric][1])}


def test_the_readme_counts_follow_from_the_committed_reruns():
    """The re-runs' tables (training seeds 5-9, sampling seed 7) are committed beside the
    studies (``results/<study>/rerun``); the README's re-run counts are what ``rerun_check``
    makes of them."""
    from experiments import inverse_problems, tweedie

    readme = open(os.path.join(ROOT, "results", "README.md")).read()
    results = os.path.join(ROOT, "results")
    counts = inverse_problems.rerun_check(os.path.join(results, "inverse_problems"),
                                          os.path.join(results, "inverse_problems", "rerun"))
    inside, cells = (sum(c[i] for c in counts.values()) for i in (0, 1))
    assert (f"land inside {inside} of the {cells} committed 95% intervals\n"
            f"({round(100 * inside / cells)}%; `experiments.inverse_problems.rerun_check`"
            ) in readme
    counts = tweedie.rerun_check(os.path.join(results, "tweedie"),
                                 os.path.join(results, "tweedie", "rerun"), 5)
    inside, cells = (sum(c[i] for c in counts.values()) for i in (0, 1))
    assert inside == cells
    assert f"land inside all {cells} of the committed 95% intervals" in readme


def test_the_main_jobs_readme_counts_follow_from_its_committed_rerun():
    """The main job's re-run paragraph: the total and every metric's count are what
    ``compare_samplers.rerun_check`` makes of ``results/compare_samplers/rerun``."""
    from experiments import compare_samplers

    readme = " ".join(open(os.path.join(ROOT, "results", "README.md")).read().split())
    results = os.path.join(ROOT, "results", "compare_samplers")
    counts = compare_samplers.rerun_check(results, os.path.join(results, "rerun"))
    inside, cells = (sum(c[i] for c in counts.values()) for i in (0, 1))
    exact = [sum(v[i] for k, v in counts.items() if k.startswith("gaussian:")) for i in (0, 1)]
    said = {"MMD^2": counts["mmd2"], "sliced W2": counts["sw2"], "NLL": counts["nll"],
            "the mode-weight error": counts["mode_err"], "the flow KL": counts["kl"],
            "the exact table": tuple(exact)}
    assert (f"for {inside} of {cells} cells ({round(100 * inside / cells)}%): "
            + ", ".join(f"{name} {a} of {b}" for name, (a, b) in said.items())) in readme


def test_image_study_rerun_check_reads_shared_errors_by_the_seeds_spread(tmp_path):
    """``images.rerun_check`` on two 5-seed studies: the same values land inside; bits/dim
    (whose per-model error, from the test digits every seed shares, cancels between the runs)
    moved by 0.05 is outside, though the table's own standard error (0.5, mostly that shared
    error) would hold it, while FD (each model's own samples) is read with the table's error."""
    from experiments import common, images

    def study(path, bpd_shift=0.0, fd_shift=0.0):
        path.mkdir()
        values = (0.0, 0.01, -0.01, 0.02, -0.02)
        bpd = [{"network": "unet", "model": "PF-ODE NLL", "bits_per_dim": 2.0 + v + bpd_shift,
                "se": 0.5, "nfe": 100} for v in values]
        common.write_table(str(path), "digits",
                           claims.over_seeds(bpd, ("network", "model"), images._BPD),
                           ["network", "model", "bits_per_dim", "bits_per_dim_se",
                            "bits_per_dim_seeds_sd", "bits_per_dim_within", "train_seeds"])
        fd = [{"network": "unet", "sampler": "ddim", "nfe_target": 20, "fd": 10 + 10 * v
               + fd_shift, "fd_sd": 2.0, "class_tv": 0.1, "class_tv_sd": 0.01,
               "confidence": 0.9, "confidence_se": 0.01} for v in values]
        common.write_table(str(path), "quality",
                           claims.over_seeds(fd, ("network", "sampler", "nfe_target"),
                                             images._QUALITY[:3]), images.QUALITY_COLUMNS)
        return str(path)

    committed = study(tmp_path / "committed")
    same = images.rerun_check(committed, study(tmp_path / "same"))
    assert same == {"digits:bits_per_dim": (1, 1), "quality:fd": (1, 1),
                    "quality:class_tv": (1, 1), "quality:confidence": (1, 1)}
    se = common.read_table(os.path.join(committed, "digits.csv"))[0]["bits_per_dim_se"]
    assert se > 0.45  # the shared error dominates the table's standard error
    moved = images.rerun_check(committed, study(tmp_path / "moved", bpd_shift=0.05,
                                                fd_shift=2.0))
    assert moved == {**same, "digits:bits_per_dim": (0, 1)}  # FD: +2 inside its +- 3.5


def test_the_loss_comparisons_readme_counts_follow_from_its_committed_rerun():
    """The compare_losses re-run paragraph's counts are what ``compare_losses.rerun_check``
    makes of ``results/compare_losses/rerun``."""
    from experiments import compare_losses

    readme = " ".join(open(os.path.join(ROOT, "results", "README.md")).read().split())
    results = os.path.join(ROOT, "results", "compare_losses")
    counts = compare_losses.rerun_check(results, os.path.join(results, "rerun"))
    inside, cells = (sum(c[i] for c in counts.values()) for i in (0, 1))
    c = {m: f"{a} of {b}" for m, (a, b) in counts.items()}
    assert (f"for {inside} of {cells} cells ({round(100 * inside / cells)}%; "
            f"`experiments.compare_losses.rerun_check`): the held-out DSM loss "
            f"{c['heldout_dsm']}, the sliced W2 of Euler-Maruyama {c['sw2_em']} and of Heun "
            f"{c['sw2_heun']}, the PF-ODE NLL {c['nll_bpd']} and the DDPM ELBO "
            f"{c['elbo_bpd']}.") in readme


def test_the_testbeds_readme_counts_follow_from_its_committed_rerun():
    """The testbeds re-run paragraph's counts are what ``testbeds.rerun_check`` makes of
    ``results/testbeds/rerun``, the Transformer's cells among them."""
    from experiments import common, testbeds

    readme = " ".join(open(os.path.join(ROOT, "results", "README.md")).read().split())
    results = os.path.join(ROOT, "results", "testbeds")
    counts = testbeds.rerun_check(results, os.path.join(results, "rerun"))
    inside, cells = (sum(c[i] for c in counts.values()) for i in (0, 1))
    assert (f"for {inside} of {cells} cells ({round(100 * inside / cells)}%; "
            "`experiments.testbeds.rerun_check`): "
            + ", ".join(f"{testbeds.LABELS[m]} {a} of {b}" for m, (a, b) in counts.items())
            ) in readme
    committed, rerun = (common.read_table(os.path.join(d, "results.csv"))
                        for d in (results, os.path.join(results, "rerun")))
    model = [r for r in committed if r["score"] == "model"]
    assert claims.rerun_coverage(model, rerun,
                                 ("testbed", "score", "sampler", "nfe_target"),
                                 tuple(testbeds.LABELS), "groups") == (16, 16)
    assert "The Transformer's 16 cells are all inside" in readme

