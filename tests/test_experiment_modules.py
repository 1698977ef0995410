"""Each experiment module end to end on a tiny setting: it writes its table and figure, and its
numbers say what the module claims."""

import csv

import jax.numpy as jnp
import numpy as np
import pytest

import sde_lib
from experiments import (
    compare_losses,
    ddpm_to_sde,
    digits,
    inverse_problems,
    ou_process,
    tweedie,
)
from tests._sde_cases import Z


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ou_process(tmp_path):
    """Simulated OU moments agree with the closed forms (|z| below Z at every time)."""
    paths = ou_process.run(ou_process.OUConfig(num_paths=4000, num_steps=400,
                                               num_checkpoints=4), str(tmp_path))
    assert (tmp_path / "ou_moments.png").stat().st_size > 0
    rows = _rows(paths["ou_moments.csv"])
    assert len(rows) == 5 and rows[-1]["t"] == "stationary"
    z = np.array([[float(r["z_mean"]), float(r["z_var"])] for r in rows[:-1]])
    assert np.all(np.abs(z) < Z), z
    np.testing.assert_allclose(float(rows[-1]["var_exact"]), 1.5**2 / 2)


@pytest.mark.slow
def test_ddpm_to_sde(tmp_path):
    """The chain's marginal error falls as 1/N (fitted rate -1 +- 0.1) and both samplers' weak
    errors fall with N."""
    config = ddpm_to_sde.DDPMToSDEConfig(Ns=(50, 100, 200), num_samples=20000, dim=4)
    paths = ddpm_to_sde.run(config, str(tmp_path))
    assert (tmp_path / "ddpm_to_sde.png").stat().st_size > 0
    rows = _rows(paths["ddpm_to_sde.csv"])
    assert abs(float(rows[-1]["marginal_err"]) + 1.0) < 0.1
    for method in ("ddpm_ancestral", "euler_maruyama"):
        errors = [float(r[f"{method}_var_err"]) for r in rows[:-1]]
        assert errors[-1] < errors[0], (method, errors)


@pytest.mark.slow
def test_tweedie(tmp_path):
    """With the exact score Tweedie's moments equal the oracle's posterior (float32 rounding);
    a briefly trained model gives finite errors, written per noise level."""
    config = tweedie.TweedieConfig(times=(0.05, 0.3), num_points=200, train_steps=200,
                                   batch_size=128, hidden=32, num_blocks=1)
    paths = tweedie.run(config, str(tmp_path))
    assert (tmp_path / "tweedie.png").stat().st_size > 0
    rows = _rows(paths["tweedie.csv"])
    assert len(rows) == 2
    for r in rows:
        assert float(r["exact_mean_rmse"]) < 1e-4 * float(r["post_sd"]) + 1e-5
        assert float(r["exact_cov_err"]) < 1e-3
        assert np.isfinite(float(r["model_mean_rmse"]))


@pytest.mark.slow
def test_inverse_problems(tmp_path):
    """With the exact score, DPS at sigma_y = 0.2 lands within 0.25 of the exact posterior mean
    of the unobserved coordinate (measured 0.03-0.07 at 500 steps); projection keeps the exact
    observation; every row is written."""
    config = inverse_problems.InverseConfig(ys=(1.5,), num_samples=400, num_steps=100,
                                            train_steps=50, batch_size=64, hidden=16,
                                            num_blocks=1)
    paths = inverse_problems.run(config, str(tmp_path))
    assert (tmp_path / "inverse.png").stat().st_size > 0
    rows = _rows(paths["inverse.csv"])
    assert len(rows) == 2 * len(inverse_problems.GUIDANCES)
    dps = [r for r in rows if r["guidance"] == "dps" and r["score"] == "exact"][0]
    assert abs(float(dps["mean_err_x2"])) < 0.25


@pytest.mark.slow
def test_digits(tmp_path):
    """A few U-Net steps on the digits prepared offline into tmp_path: bits/dim are finite and
    positive, every sampler's grid and the inpainting figure are written."""
    config = digits.DigitsConfig(train_steps=5, num_steps=21, num_samples=2, num_test=4,
                                 data_dir=str(tmp_path / "tfds"))
    paths = digits.run(config, str(tmp_path / "run"))
    summary = _rows(paths["digits.csv"])[0]
    assert 0 < float(summary["pf_ode_bpd"]) < 100 and 0 < float(summary["ddpm_elbo_bpd"]) < 100
    assert [r["sampler"] for r in _rows(paths["samplers.csv"])] == list(digits.SAMPLERS)
    for name in ("samples.png", "inpainting.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.slow
def test_compare_losses(tmp_path):
    """Two losses and the exact score at a tiny budget: one row each; the exact score has the
    lowest held-out DSM loss (it minimizes it in expectation; 2000 held-out points)."""
    config = compare_losses.LossComparisonConfig(
        losses=("eps prediction (eps loss)", "sliced score matching"), train_steps=30,
        batch_size=64, hidden=16, num_blocks=1, num_heldout=2000, num_nll=10, num_samples=200)
    paths = compare_losses.run(config, str(tmp_path))
    assert (tmp_path / "losses.png").stat().st_size > 0
    rows = _rows(paths["losses.csv"])
    assert [r["loss"] for r in rows] == ["exact score", *config.losses]
    dsm = [float(r["heldout_dsm"]) for r in rows]
    assert dsm[0] < min(dsm[1:])


def test_module_configs_reject_bad_values():
    """The fast tier's check of the modules whose runs are in the slow tier."""
    with pytest.raises(ValueError, match="num_steps must be > 20"):
        digits.DigitsConfig(num_steps=20)
    with pytest.raises(ValueError, match="train_steps must be >= 1"):
        digits.DigitsConfig(train_steps=0)
    with pytest.raises(ValueError, match="are unknown"):
        compare_losses.LossComparisonConfig(losses=("hinge",))


def test_ddpm_to_sde_marginal_error():
    """``marginal_error(N)`` is max_i |alpha_bar_i - alpha(t_i)^2|: the chain SDE's marginal at
    t_i (the chain) against the VP SDE's, computed here through ``marginal_coeffs``."""
    for N in (50, 400):
        t = jnp.arange(1, N + 1) / N
        chain_alpha, _ = sde_lib.DiscreteVPSDE(N=N).marginal_coeffs(t)
        vp_alpha, _ = sde_lib.VPSDE(N=N).marginal_coeffs(t)
        want = float(jnp.max(jnp.abs(chain_alpha**2 - vp_alpha**2)))
        np.testing.assert_allclose(ddpm_to_sde.marginal_error(N), want, rtol=1e-9)
