"""Test setup: 8 host CPU devices (for pmap), float64, rank promotion that raises, and XLA's
backend optimisation level 0.

The tests' programs are tiny, so compiling them dominates the suite's time, and at level 0 the
CPU backend compiles them faster (LLVM's optimisation passes off); the fast tier took 2 min 29 s
instead of 2 min 58 s on 2 cores, every fast test passing at both levels. Set
``DDPM_SDE_TEST_OPTIMIZE=1`` to test with XLA's default level, as a real run compiles; the
subprocesses of the kill, resume and multi-process tests always do.

The environment variables must be set before JAX initialises its backends, so this module sets
them at import time, before anything imports jax.
"""

import os

_flags = ["--xla_force_host_platform_device_count=8"]
if os.environ.get("DDPM_SDE_TEST_OPTIMIZE", "0") != "1":
    _flags.append("--xla_backend_optimization_level=0")
for _flag in _flags:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
