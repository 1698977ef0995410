"""Test setup: 8 host CPU devices (for pmap), float64, rank promotion that raises, XLA's
optimisations mostly off and a persistent compilation cache.

The tests' programs are tiny, so compiling them dominates the suite's time, and with XLA's
optimisations mostly off (``jax_disable_most_optimizations``: backend level 0, LLVM's expensive
passes off) the CPU backend compiles them faster; the fast tier took 2 min 29 s instead of
2 min 58 s on 2 cores, every fast test passing at both levels. XLA:CPU's older loop emitters
(``--xla_cpu_use_fusion_emitters=false``) compile them faster again: the main job's tiny run
took 106 s instead of 141 s, the Tweedie study's 23 s instead of 33 s (side by side, 2 cores).
A test that runs more than it compiles (training a CNN for 300 steps), or whose subject is a
real run's float32 rounding, carries the ``optimized`` marker and compiles as a real run does:
the MNIST classifier's test took 40 s instead of 66 s (the image studies' tiny runs compile
more than they run: 20% slower so).
Set ``DDPM_SDE_TEST_OPTIMIZE=1`` to test everything with XLA's defaults; the subprocesses of
the kill, resume and multi-process tests always use them.

Compiled programs are kept on disk in ``<repository>/.jax_cache`` (JAX's persistent compilation
cache; its key holds the program, the XLA flags and the jax version, so a changed program
compiles again; emptied at the start of a run once it holds over ``CACHE_BYTES``): a second run
of the fast tier loads what the first compiled (on 2 idle cores, a fresh clone: 1 min 23 s
again, 2 min 42 s from an empty cache).
``DDPM_SDE_TEST_CACHE=DIR`` puts it elsewhere, ``DDPM_SDE_TEST_CACHE=off`` turns it off;
``make clean`` removes it.

The environment variables must be set before JAX initialises its backends, so this module sets
them at import time, before anything imports jax.

After a test file, JAX's compiled programs are dropped (``jax.clear_caches``) when the process
holds over ``MAX_MAPS`` memory maps. XLA:CPU maps every compiled program's code into memory, and
those maps stay while the program is cached; a pytest-xdist worker that runs half the suite
compiles thousands of programs and reached Linux's limit of 65,530 maps per process
(``vm.max_map_count``): the next compile aborted the worker ("Fatal Python error: Aborted").
Measured here: 73 sampler tests left 5,136 maps; with the caches cleared after every file, each
file started again from about 1,100 to 2,000 and the most any file reached was 24,990 (so a file
that starts under 30,000 ends under 55,000). Clearing after every file cost the fast tier about
a minute of recompiling (4 min 6 s against about 3 min), hence the threshold.
"""

import gc
import os
import shutil

OPTIMIZE = os.environ.get("DDPM_SDE_TEST_OPTIMIZE", "0") == "1"
_flags = ["--xla_force_host_platform_device_count=8"]
if not OPTIMIZE:
    _flags.append("--xla_cpu_use_fusion_emitters=false")
for _flag in _flags:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_disable_most_optimizations", not OPTIMIZE)  # read at each compile

CACHE_BYTES = 2**30
_cache = os.environ.get("DDPM_SDE_TEST_CACHE",
                        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     ".jax_cache"))


def _size(path: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


if _cache != "off":
    # emptied by the first process (pytest-xdist's controller, not its workers) once it holds
    # over CACHE_BYTES: JAX's own size limit needs a file lock per entry, which doubled the
    # time of a first run here
    if "PYTEST_XDIST_WORKER" not in os.environ and os.path.isdir(_cache) \
            and _size(_cache) > CACHE_BYTES:
        shutil.rmtree(_cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # every program

import pytest  # noqa: E402

MAX_MAPS = 30_000


def _memory_maps() -> int:
    """This process's memory maps (Linux); above ``MAX_MAPS`` where they cannot be counted."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return MAX_MAPS + 1


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test file when the process holds over
    ``MAX_MAPS`` memory maps (see the module docstring)."""
    yield
    if _memory_maps() > MAX_MAPS:
        jax.clear_caches()
        gc.collect()


@pytest.fixture(autouse=True)
def _optimized_compiles(request, monkeypatch):
    """A test marked ``optimized`` compiles as a real run does (see the module docstring): XLA's
    default optimisations (``jax_disable_most_optimizations`` is read at each compile) and its
    default loop emitters (an override of the process's XLA_FLAGS in each compile's options, as
    ``jax.jit(compiler_options=...)`` passes them); both are part of the persistent cache's key.
    The programs compiled before are dropped first, so none compiled for the tests is reused."""
    if OPTIMIZE or request.node.get_closest_marker("optimized") is None:
        yield
        return
    from jax._src import compiler

    get_compile_options = compiler.get_compile_options

    def real_run_options(*args, env_options_overrides=None, **kwargs):
        overrides = {"xla_cpu_use_fusion_emitters": True, **(env_options_overrides or {})}
        return get_compile_options(*args, env_options_overrides=overrides, **kwargs)

    jax.clear_caches()
    monkeypatch.setattr(compiler, "get_compile_options", real_run_options)
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)
