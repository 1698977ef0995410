"""The console scripts that ``pip install`` puts next to the venv's python (setup.cfg's
``console_scripts``): ``ddpm-sde`` runs exactly what ``python -m trainer.main`` runs, and
``ddpm-sde-<study>`` (underscores as dashes) what ``python -m experiments.<study>`` runs.

Each runs its module as ``__main__`` (``runpy``, as ``python -m`` does), so absl finds the same
main module: ``--help`` lists the same flags under the same docstring, and the exit statuses are
the same. The studies are named by module path, not imported: the trainer imports no study.
"""

import runpy
from collections.abc import Callable


def run_module(module: str) -> Callable[[], None]:
    """The console script that runs ``python -m <module>`` with the script's arguments."""
    def main() -> None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    main.__doc__ = f"``python -m {module}``, with this process's command line."
    main.module = module
    return main


main = run_module("trainer.main")
compare_samplers = run_module("experiments.compare_samplers")
compare_losses = run_module("experiments.compare_losses")
testbeds = run_module("experiments.testbeds")
diagnostics = run_module("experiments.diagnostics")
digits = run_module("experiments.digits")
mnist = run_module("experiments.mnist")
ddpm_to_sde = run_module("experiments.ddpm_to_sde")
tweedie = run_module("experiments.tweedie")
ou_process = run_module("experiments.ou_process")
inverse_problems = run_module("experiments.inverse_problems")
