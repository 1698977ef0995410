"""The README's usage example runs and its Tweedie moments equal the oracle's posterior."""

import pathlib
import re

import numpy as np
import pytest


@pytest.mark.slow
def test_readme_usage_example_runs():
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    env = {}
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102 -- the project's own README
    np.testing.assert_allclose(env["mean0"], env["post"].mean(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(env["cov0"], env["post"].covariance(), rtol=1e-7, atol=1e-9)
