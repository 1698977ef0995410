"""Every figure stands on its own: each figure function is drawn on tiny synthetic inputs, shaped
as the studies pass them (nothing trains), and checked: every axes shows data and has an x and a
y label, the figure or each axes has a title, an image has a colour bar, tick labels do not
collide, a log axis is labelled with plain numbers, and the PNG is written."""

import json
import math
import types

import numpy as np
import pytest

from experiments import (
    compare_losses,
    compare_samplers,
    ddpm_to_sde,
    diagnostics,
    images,
    inverse_problems,
    testbeds,
    tweedie,
)
from trainer import metrics, reporting

plt = reporting.pyplot()


def _overlaps(boxes, along: str) -> bool:
    lo, hi = ("x0", "x1") if along == "x" else ("y0", "y1")
    boxes = sorted(boxes, key=lambda b: getattr(b, lo))
    pairs = zip(boxes, boxes[1:], strict=False)
    return any(getattr(a, hi) > getattr(b, lo) + 0.5 for a, b in pairs)


def check_figure(fig, tmp_path, name="figure.png"):
    """The checks of the module docstring; saves ``fig`` through ``reporting.save_figure``."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    colorbars = {im.colorbar.ax for ax in fig.axes for im in ax.images if im.colorbar}
    drawn = [ax for ax in fig.axes if ax not in colorbars]
    assert drawn
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for ax in drawn:
        where = f"{name}, axes {ax.get_title()!r}"
        assert ax.has_data(), f"{where} is empty"
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"{where} lacks a label"
        assert ax.get_title().strip() or suptitle.strip(), f"{where} has no title"
        for image in ax.images:
            if image.get_array().ndim == 2:  # a colour-mapped image: its scale is shown
                assert image.colorbar is not None, f"{where}: an image without a colour bar"
        inside = ax.get_window_extent(renderer).expanded(1.3, 1.3)
        for along, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()
                      and inside.overlaps(t.get_window_extent(renderer))]
            assert not _overlaps([t.get_window_extent(renderer) for t in labels], along), \
                f"{where}: {along} tick labels collide: {[t.get_text() for t in labels]}"
            if axis.get_scale() == "log":
                assert not any("times" in t.get_text() for t in labels), \
                    f"{where}: {along} ticks as a x 10^k: {[t.get_text() for t in labels]}"
    written = reporting.save_figure(fig, str(tmp_path), name)
    assert (tmp_path / name).stat().st_size > 0 and written == {name: str(tmp_path / name)}
    return drawn


# ----- trainer/metrics.py: the workdir's samples and loss figures ------------------------------

@pytest.mark.parametrize("d", [1, 2, 16])
def test_samples_vectors(tmp_path, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, d))
    x[0] = 1e3  # one outlier: the limits stay on the cloud, the title counts it
    fig = metrics.figure_samples(x, "euler_maruyama, step 10", reference=rng.normal(size=(200, d)))
    (ax,) = check_figure(fig, tmp_path)
    assert "1 of 400 samples outside the axes" in ax.get_title()
    assert ax.get_xlim()[1] < 10
    if d == 16:
        assert ax.get_xlabel() == "x[0]" and ax.get_ylabel() == "x[1]"
        assert "first 2 of 16 coordinates" in ax.get_title()
    assert any("reference" in t.get_text() for t in ax.get_legend().get_texts())


def test_samples_images_and_old_call(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 6, 6, 1))
    (ax,) = check_figure(metrics.figure_samples(x, "pc, step 3"), tmp_path)
    assert ax.images[0].colorbar is not None
    path = str(tmp_path / "sample_mode_3.png")  # the call of trainer/evaluation.py
    assert metrics.save_samples_png(np.zeros((4, 2)), path, "pc, step 3") == path
    with pytest.raises(ValueError, match="vectors or"):
        metrics.save_samples_png(np.zeros(3), path)


def _metrics_csv(workdir, loss=None):
    rows = "".join(f"{s},train/loss,{2.4 + 0.5 * math.exp(-s / 30)!r}\n" for s in range(1, 120))
    (workdir / "metrics.csv").write_text("step,name,value\n" + rows + "100,eval/test_loss,2.6\n")
    if loss is not None:
        (workdir / "config.json").write_text(json.dumps({"loss": loss}))
    return str(workdir / "metrics.csv")


def test_loss_names_the_loss(tmp_path):
    csv = _metrics_csv(tmp_path, {"name": "ssm", "weighting": "likelihood"})
    (ax,) = check_figure(metrics.figure_loss(csv), tmp_path, "loss.png")
    assert ax.get_ylabel() == "ssm, likelihood weighting loss" and "ssm" in ax.get_title()
    assert ax.get_legend()._loc == 0  # "best": the legend moves off the data
    assert metrics.figure_loss(csv, loss_name="dsm").axes[0].get_ylabel() == "dsm loss"
    plt.close("all")
    # the call of trainer/loop.py, without config.json: a label that names no field
    other = tmp_path / "other"
    other.mkdir()
    path = str(other / "loss.png")
    assert metrics.save_loss_png(_metrics_csv(other), path) == path
    label = metrics.figure_loss(str(other / "metrics.csv")).axes[0].get_ylabel()
    assert "loss.name" not in label
    plt.close("all")


# ----- experiments/*.py ----------------------------------------------------------------------

def test_ddpm_to_sde(tmp_path):
    Ns = [50, 100, 200, 400, 800]
    rows = [{"N": N, "marginal_err": 0.8 / N, "ddpm_ancestral_var_err": 0.8 / N,
             "euler_maruyama_var_err": 0.4 / N, "var_se": 4e-4} for N in Ns]
    rates = {"marginal_err": -1.0, "ddpm_ancestral_var_err": -1.0,
             "euler_maruyama_var_err": -1.1}
    check_figure(ddpm_to_sde.figure(rows, rates), tmp_path)


def test_score_error(tmp_path):
    rows = [{"dim": d, "t": t, "rel_score_err": 0.1 / t / d, "rel_score_err_sd": 0.01}
            for d in (2, 8) for t in (0.01, 0.1, 0.5, 1.0)]
    check_figure(diagnostics.score_error_figure(rows, (2, 8), 3), tmp_path)


def test_sdes(tmp_path):
    rows = [{"sde": sde, "sampler": m, "nfe": k, "kl_nats": c / k}
            for sde in diagnostics.SDES for m, c in (("ddim", 5.0), ("pf_ode_heun", 0.5))
            for k in (10, 20, 50, 100)]
    check_figure(diagnostics.sdes_figure(rows, 16), tmp_path)


def test_tweedie(tmp_path):
    rows = [{"sigma_t": s, "post_sd": s / (1 + s), "model_mean_rmse": 0.05 * s,
             "model_mean_rmse_se": 0.01 * s, "model_cov_err": 0.1 * s, "model_cov_err_se": None,
             "naive_mean_rmse": s} for s in (0.05, 0.2, 1.0, 3.0)]
    axes = check_figure(tweedie.figure(rows, 2), tmp_path)
    assert len({ax.get_ylabel() for ax in axes}) == 2  # one axis per quantity


def test_image_study_figures(tmp_path, monkeypatch):
    """The image study's held-out loss, bits/dim against NFE (a symlog axis where a value is
    negative), classifier FD against NFE (one legend below the panels), the image grids (one
    colour bar, the rows' titles) and the sample grids' rows named with the measured NFE."""
    nets, methods = ("unet_digits", "transformer_digits"), ("ddpm_ancestral", "ddim", "pc")
    exp = types.SimpleNamespace(networks=nets, methods=methods, num_samples=64,
                                train_seeds=(0, 1, 2))
    curves = [{"network": n, "train_seed": seed, "step": s, "test_loss": 0.1 + (1 + seed) / s}
              for n in nets for seed in (0, 1, 2) for s in (100, 200, 400)]
    axes = check_figure(images._loss_figure(plt, curves), tmp_path, "loss.png")
    assert len(axes[0].get_legend().get_texts()) == 2  # one entry per network, not per seed
    likelihood = [{"network": "-", "model": "independent pixels (fitted on train)",
                   "bits_per_dim": 2.4}] + [
        {"network": n, "model": "PF-ODE NLL", "bits_per_dim": 2.3, "nfe": 400.4} for n in nets]
    by_nfe = [{"network": n, "method": m, "nfe": k, "bits_per_dim": b / k ** 0.5 + 2.0,
               "bits_per_dim_se": 0.02} for n in nets for m, b in (("heun", -2.0),
                                                                   ("elbo", 20.0))
              for k in (20, 50, 100)]
    check_figure(images._likelihood_figure(plt, likelihood, by_nfe, exp), tmp_path)
    by_nfe[0]["bits_per_dim"] = -7.5  # a fixed-step NLL below 0: on a symlog axis, drawn
    axes = check_figure(images._likelihood_figure(plt, likelihood, by_nfe, exp), tmp_path)
    assert axes[0].get_yscale() == "symlog" and axes[0].get_ylim()[0] < -7.5
    quality = [{"network": "-", "fd": 9.0, "fd_se": 2.0},
               {"network": "-", "fd": 86.0, "fd_se": 7.0}] + [
        {"network": n, "sampler": m, "nfe": k, "fd": 10.0 + 100.0 / k + i, "fd_se": 2.0}
        for n in nets for i, m in enumerate(methods) for k in (20, 50, 100)]
    fig = images._quality_figure(plt, quality, exp)
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    check_figure(fig, tmp_path, "quality_vs_nfe.png")

    grid = np.random.default_rng(4).uniform(-1, 1, (3, 5, 8, 8, 1))
    fig = images._grid(list(grid), ["original", "observed", "dps-norm 3"], plt)
    colorbars = [ax for ax in fig.axes if ax.get_ylabel().startswith("pixel value")]
    assert len(colorbars) == 1
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_subplotspec() is not None
            and ax.get_subplotspec().colspan.start == 0] == ["original", "observed",
                                                             "dps-norm 3"]
    reporting.save_figure(fig, str(tmp_path), "grid.png")

    # the sample grids name each row's measured NFE (an adaptive sampler's column is a
    # tolerance), the target where none was measured
    exp = types.SimpleNamespace(networks=("u",), methods=("pf_ode_adaptive", "ddim"),
                                nfes=(20, 100))
    samples = {("u", m, k): grid[0] for m in exp.methods for k in exp.nfes}
    titles, real_grid = [], images._grid
    monkeypatch.setattr(images, "_grid",
                        lambda rows, t, plt: titles.extend(t) or real_grid(rows, t, plt))
    paths = images._sample_grids(plt, samples, exp, str(tmp_path),
                                 {("u", "pf_ode_adaptive", 20): 116.0})
    assert set(paths) == {"samples_deterministic.png"}
    assert titles == ["u: pf_ode_adaptive @ NFE 116", "u: ddim @ NFE 20",
                      "u: pf_ode_adaptive @ NFE 100", "u: ddim @ NFE 100"]


def test_testbeds_figure(tmp_path):
    beds, methods = ("pair", "ring"), ("euler_maruyama", "pf_ode_euler")
    exp = types.SimpleNamespace(testbeds=beds, methods=methods)
    rows = [{"testbed": b, "score": "exact samples", "sampler": "-", "sw2": 0.1,
             "sw2_sd": 0.02} for b in beds] + [
        {"testbed": b, "score": "exact", "sampler": m, "nfe": k, "kl": 1.0 / k,
         "kl_sd": 0.1 / k, "path": 2.0 / k, "path_sd": None, "sw2": 0.1 + 1.0 / k,
         "sw2_sd": 0.01} for b in beds for m in methods for k in (10, 20, 50, 100)]
    check_figure(testbeds.metrics_figure(rows, exp), tmp_path, "testbeds.png")
    exp.nfes = (10, 20)
    means = np.array([[-2.0, 0.0], [2.0, 1.0]])
    gmm = types.SimpleNamespace(means=means, dim=2, log_prob=lambda z: -0.5 * np.min(
        np.sum((np.asarray(z)[:, None] - means[None]) ** 2, -1), 1))
    x = np.random.default_rng(3).normal(size=(200, 2))
    samples = {b: {("exact", m, 10): x for m in methods} for b in beds}
    del samples["ring"][("exact", "pf_ode_euler", 10)]  # a sampler not defined at this NFE
    fig = testbeds.samples_figure(samples, {b: gmm for b in beds}, beds, exp)
    assert [t.get_text() for t in fig.axes[3].texts] == ["not defined at\nNFE 10"]
    assert not any(ax.texts for ax in fig.axes[:3])
    check_figure(fig, tmp_path, "samples.png")


def test_inverse(tmp_path):
    post = types.SimpleNamespace(weights=np.array([0.6, 0.4]),  # what the figure reads of a
                                 means=np.array([[0.5, -2.0], [0.5, 1.0]]),  # GaussianMixture
                                 covs=np.stack([0.3 * np.eye(2)] * 2))
    x = np.random.default_rng(2).normal(size=(300, 2))
    shown = {(g, s): (x, post) for g, s in [("projection", 0.0), ("dps", 0.2), ("tmpd", 0.2),
                                            ("pigdm", 0.2), ("dps-norm 0.01", 0.2)]}
    axes = check_figure(inverse_problems.figure(shown, 0.5), tmp_path)
    assert len(axes) == 5 and axes[0].get_figure().get_size_inches()[0] < 15  # wrapped


def test_compare_losses(tmp_path):
    rows = [{"loss": name, "groups": 3, "nll_bpd": nll, "nll_bpd_se": 0.05, "elbo_bpd": nll + 0.2,
             "elbo_bpd_se": 0.07, "sw2_em": w, "sw2_em_se": w / 4, "sw2_heun": 2 * w,
             "sw2_heun_se": 0.02} for name, nll, w in
            [("exact score", 2.0, 0.05), ("dsm", 2.1, 0.1), ("ssm", 9.0, 0.4)]]
    rows.append({"loss": "esm (diverged)", "groups": 3, "nll_bpd": math.inf, "nll_bpd_se": None,
                 "elbo_bpd": 3.0, "elbo_bpd_se": None, "sw2_em": math.inf,
                 "sw2_em_se": None, "sw2_heun": 0.3, "sw2_heun_se": None})
    fig = compare_losses.figure(rows, 3)
    for ax in fig.axes:  # every error bar lies inside the axis
        for container in ax.containers:
            if hasattr(container, "has_xerr") and container.has_xerr:
                for segments in container.lines[2]:
                    ends = np.concatenate([np.reshape(seg, (-1, 2))[:, 0]
                                           for seg in segments.get_segments()])
                    ends = ends[np.isfinite(ends)]
                    ends = ends[ends > 0] if ax.get_xscale() == "log" else ends
                    lo, hi = ax.get_xlim()
                    assert ends.min() >= lo and ends.max() <= hi
    check_figure(fig, tmp_path)
    assert compare_losses.write_figure(str(tmp_path), rows, 3) == {
        "losses.png": str(tmp_path / "losses.png")}


def _comparison(methods):
    exp = types.SimpleNamespace(dims=(2, 8), methods=methods, nfes=(10, 20, 40),
                                gaussian_dim=4, train_seeds=(0, 1))
    exp.gaussian_seeds = 3
    rows = [{"dim": d, "score": "exact samples", "sw2": 0.02, "sw2_sd": 0.005, "mmd2": 1e-5,
             "mmd2_sd": 1e-4} for d in exp.dims]
    rows += [{"dim": d, "score": score, "sampler": m, "nfe": n, "sw2": 1.0 / n + 0.01 * k,
              "sw2_se": 0.002, "mmd2": 0.1 / n**2 - 1e-4 * k, "mmd2_se": 1e-4}
             for d in exp.dims for score in ("model", "exact")
             for k, m in enumerate(methods) for n in exp.nfes]
    gaussian = [{"sampler": "flow limit", "nfe": 0, "kl_nats": 1e-3}]
    gaussian += [{"sampler": m, "nfe": n, "kl_nats": 1.0 / n + 0.001 * k}
                 for k, m in enumerate(methods) for n in exp.nfes]
    return exp, rows, gaussian


@pytest.mark.parametrize("metric", ["mmd2", "sw2"])
def test_quality_vs_nfe(tmp_path, metric):
    """One legend for the figure; the MMD^2 (which can be negative) on a symmetric log axis,
    linear within the exact samples' sd."""
    methods = [f"sampler_{k}" for k in range(13)]
    exp, rows, gaussian = _comparison(methods)
    fig = compare_samplers.quality_figure(rows, gaussian, exp, metric)
    check_figure(fig, tmp_path)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert fig.axes[0].get_yscale() == ("symlog" if metric == "mmd2" else "log")
    styles = compare_samplers.method_styles(methods)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 13
    assert len({s["color"] for s in styles.values()}) == 13


def test_samples_2d(tmp_path):
    methods = ["euler_maruyama", "ddim", "pf_ode_heun"]
    exp, _, _ = _comparison(methods)
    means = np.array([[-2.0, 0.0], [2.0, 0.0]])  # what the figure reads of a GaussianMixture
    gmm = types.SimpleNamespace(means=means, log_prob=lambda z: np.log(np.exp(-0.5 * (
        (np.asarray(z)[:, None] - means) ** 2).sum(-1)).mean(-1) / (2 * np.pi)))
    x = np.random.default_rng(3).normal(size=(100, 2))
    samples = {("model", m, 20): x for m in methods}
    axes = check_figure(compare_samplers.samples_figure(samples, gmm, exp), tmp_path)
    assert len(axes) == 3  # the fourth place of the 2 x 2 grid is removed
