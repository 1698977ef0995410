"""Each experiment module end to end on a tiny setting: it writes its table and figure, and its
numbers say what the module claims."""

import csv

import numpy as np

from experiments import ddpm_to_sde, ou_process, tweedie
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
