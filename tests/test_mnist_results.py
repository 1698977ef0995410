"""The committed MNIST study (``results/mnist``): its claims and headline are what the image
study's code makes of the committed tables, the README quotes the headline between its markers,
and the tables hold what the study measures (every sampler at every NFE target, the reference
rows, the likelihoods, the inverse problems). The study end to end at a tiny config is in
``test_experiment_modules``."""

import pathlib
import shutil

import numpy as np

from experiments import claims, common, images, mnist
from sde_lib import SAMPLERS

ROOT = pathlib.Path(__file__).parents[1]
COMMITTED = ROOT / "results" / "mnist"
TABLES = ("digits", "quality", "likelihood_vs_nfe", "memorization", "inverse")


def test_committed_mnist_reports_follow_from_the_tables_and_the_readme_quotes_them(tmp_path):
    for name in TABLES:
        shutil.copy(COMMITTED / f"{name}.csv", tmp_path / f"{name}.csv")
    paths = images.rewrite_reports(str(tmp_path))
    assert {"claims.csv", "claims.md", "headline.md"} <= set(paths)
    for name in ("claims.csv", "claims.md", "headline.md"):
        assert (tmp_path / name).read_text() == (COMMITTED / name).read_text(), name
    readme = (ROOT / "results" / "README.md").read_text()
    assert (claims.readme_block(readme, mnist.README_MARKERS)
            == (COMMITTED / "headline.md").read_text().strip("\n"))


def test_committed_mnist_tables_cover_the_study():
    """Every registered sampler at NFE 10/20/50/100 (a finite FD with its bootstrap sd, the class
    TV and the confidence with their errors, where the sampler is defined), the floor and the
    baselines; the test digits' bits/dim for the PF-ODE and the DDPM ELBO against the
    independent-pixel model."""
    quality = common.read_table(str(COMMITTED / "quality.csv"))
    cells = {(r["sampler"], r["nfe_target"]) for r in quality if r["network"] == "unet_mnist"}
    assert cells == {(m, n) for m in SAMPLERS for n in (10, 20, 50, 100)}
    scored = [r for r in quality if "fd" in r]  # read_table drops empty cells
    assert all(np.isfinite(r["fd"]) and r["fd_se"] > 0 for r in scored)
    # the class histogram's TV and the confidence with their errors in every sampler's row
    assert all(r["class_tv_se"] > 0 and r["confidence_se"] > 0 for r in scored
               if r["network"] == "unet_mnist")
    assert {"training digits (floor)", "independent pixels", "mean training image"} <= {
        r["sampler"] for r in quality}
    bpd = {r["model"]: r for r in common.read_table(str(COMMITTED / "digits.csv"))}
    assert bpd["uniform code"]["bits_per_dim"] == 8.0
    assert {"PF-ODE NLL", "independent pixels (fitted on train)",
            "DDPM negative ELBO, variance beta",
            "DDPM negative ELBO, variance beta_tilde"} <= set(bpd)
    assert all(r["test_digits"] >= 200 for r in bpd.values())


def test_the_readme_quotes_the_committed_mnist_numbers():
    """The root README's MNIST paragraph states the committed tables' values (rounded): the
    PF-ODE NLL, the pixel model and the ELBOs with their errors, the FD range at NFE 100 with
    the floor and the pixel model, and the inverse problems' MSEs."""
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index("### MNIST at 28x28"):readme.index("## Layout")]
    text = " ".join(text.split())
    bpd = {r["model"]: r for r in common.read_table(str(COMMITTED / "digits.csv"))}
    for model in ("PF-ODE NLL", "independent pixels (fitted on train)",
                  "DDPM negative ELBO, variance beta_tilde", "DDPM negative ELBO, variance beta"):
        r = bpd[model]
        assert f"{r['bits_per_dim']:.3f} +- {r['bits_per_dim_se']:.3f}" in text, model
    quality = common.read_table(str(COMMITTED / "quality.csv"))
    at_100 = sorted((r for r in quality if r.get("nfe_target") == 100), key=lambda r: r["fd"])
    for r in (at_100[0], at_100[-1]):
        assert f"{r['fd']:.1f} +- {r['fd_se']:.1f}" in text, r["sampler"]
    floor, pixel = quality[0], quality[1]
    assert f"floor of real digits ({floor['fd']:.1f} +- {floor['fd_se']:.1f})" in text
    assert f"pixel model ({pixel['fd']:.0f} +- {pixel['fd_se']:.0f})" in text
    inverse = {(r["task"], r["method"]): r for r in common.read_table(
        str(COMMITTED / "inverse.csv"))}
    for (task, method), digits in ((("super-resolution", "dps-norm"), 4),
                                   (("super-resolution", "projection"), 4),
                                   (("super-resolution", "nearest training digit"), 3),
                                   (("denoising", "dps-norm"), 4), (("inpainting", "dps-norm"), 3),
                                   (("inpainting", "nearest training digit"), 3)):
        r = inverse[task, method]
        assert f"{r['mse']:.{digits}f} +- {r['mse_se']:.{digits}f}" in text, (task, method)
    assert f"(the noisy image {inverse['denoising', 'observation']['mse']:.4f})" in text


def test_committed_mnist_inverse_problems_cover_every_task_and_tune_dps_on_validation():
    """Each task of ``images.TASKS`` on at least 200 test digits with the projection (noiseless
    tasks), normalised DPS, PiGDM, the nearest-neighbour and mean-image baselines (a finite MSE
    with its error wherever one is reported); DPS's zeta' chosen on validation digits, as the
    lowest validation MSE of ``inverse_validation.csv``, which never scores a test digit."""
    inverse = common.read_table(str(COMMITTED / "inverse.csv"))
    validation = common.read_table(str(COMMITTED / "inverse_validation.csv"))
    for task, sigma_y in images.TASKS:
        rows = {r["method"]: r for r in inverse if r["task"] == task}
        expected = {"dps-norm", "pigdm", "nearest training digit", "mean training image"}
        assert expected | ({"projection"} if sigma_y == 0 else set()) <= set(rows), task
        assert all(r["digits"] >= 200 for r in rows.values())
        assert all(np.isfinite(r["mse"]) and r["mse_se"] > 0 for r in rows.values() if "mse" in r)
        dps = rows["dps-norm"]
        assert "validation digits" in dps["zeta_chosen_on"]
        held = [r for r in validation if r["task"] == task and "mse" in r]
        assert len(held) >= 2 and dps["zeta"] == min(held, key=lambda r: r["mse"])["zeta"]
