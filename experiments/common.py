r"""What the studies share: their config files, tables, sample-quality statistics against a known
data law, jitted samplers and flow KLs, the exact Gaussian testbed and training several seeds.

Sample quality (all take ``(n, d)`` arrays and return Python floats or numpy arrays):

* ``sliced_wasserstein(x, y, rng)``: the sliced 2-Wasserstein distance (Rabin et al. 2011;
  Bonneel et al. 2015) ``SW_2(x, y)^2 = E_theta W_2(theta^T x, theta^T y)^2`` over directions
  uniform on the sphere, each 1-D ``W_2`` from the sorted projections (equal sample sizes);
* ``mode_weights(gmm, x)``: the fraction of samples whose most probable component is ``k``;
* ``mean_nll(gmm, x)``: the mean true negative log-density ``-E log p(x)`` of the samples in nats
  per dimension (for exact samples it is the entropy per dimension).

Tables are written whole or not at all (``trainer.reporting.write_atomic``). A study that runs
for hours keeps each finished unit of work in a ``ResultCache`` and, run again in the same
workdir, resumes after the last one.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import sde_lib
import trainer
from sde_lib import evaluation
from sde_lib.gmm import GaussianMixture
from trainer.reporting import write_atomic

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


_SHOW_PROGRESS = [True]


def progress(items=None, desc: str = "", total: int | None = None, unit: str = "setting"):
    """A progress bar on stderr (tqdm) over ``items``, or one to ``update`` by hand up to
    ``total``: every study phase that can take more than a few seconds shows one (none inside
    ``no_progress``)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, disable=not _SHOW_PROGRESS[-1])


@contextlib.contextmanager
def no_progress():
    """No progress bars inside: for a pass that only reads what was kept."""
    _SHOW_PROGRESS.append(False)
    try:
        yield
    finally:
        _SHOW_PROGRESS.pop()


def config_file(name: str) -> str:
    """The path of ``experiments/configs/<name>.py``."""
    return os.path.join(CONFIG_DIR, f"{name}.py")


# ----- tables ------------------------------------------------------------------------------------

def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, missing values as ``n/a``."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def summarize(runs, names) -> dict:
    """``{name: mean, name_sd: sd}`` over ``runs`` (dicts) for each of ``names``; the sd is
    ``None`` for a single run."""
    out = {}
    for name in names:
        values = np.array([r[name] for r in runs], float)
        out[name] = float(values.mean())
        out[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _number(value):
    """A CSV cell back as a number where it is one (``int`` before ``float``), else as is."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def read_table(path: str) -> list[dict]:
    """A table ``write_table`` wrote (its ``.csv``) read back: numbers as numbers, empty cells
    dropped, so a study's reports can be regenerated from its committed tables."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def write_csv(workdir: str, name: str, rows: Sequence[Mapping],
              columns: Sequence[str]) -> dict[str, str]:
    """``<name>.csv`` in ``workdir`` (``None`` as an empty cell); returns its path by file
    name."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{c: ("" if r.get(c) is None else r.get(c)) for c in columns}
                      for r in rows])
    return {f"{name}.csv": write_atomic(os.path.join(workdir, f"{name}.csv"), buf.getvalue())}


def write_table(workdir: str, name: str, rows: Sequence[Mapping],
                columns: Sequence[str]) -> dict[str, str]:
    """``<name>.csv`` and ``<name>.md`` in ``workdir``; returns their paths by file name."""
    return {**write_csv(workdir, name, rows, columns),
            f"{name}.md": write_atomic(os.path.join(workdir, f"{name}.md"),
                                       markdown_table(rows, columns))}


class ResultCache:
    """The finished units of work of a long study, kept in ``<workdir>/partial/<fingerprint>/``:
    one ``<key>.json`` (a table row or any JSON value) and optionally ``<key>.npy`` (an array)
    per unit, each written whole. ``fingerprint`` is any JSON value that fixes the results (the
    config, the trained models' steps): another fingerprint is another directory, so a changed
    setting never reuses a stale result. ``rng(key)`` is a numpy generator seeded by the key, so
    that a resumed study draws what an uninterrupted one would."""

    def __init__(self, workdir: str, fingerprint, seed: int = 0):
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str)
                                .encode()).hexdigest()[:16]
        self.dir = os.path.join(workdir, "partial", digest)
        self.seed = seed

    def _path(self, key: str, ext: str) -> str:
        return os.path.join(self.dir, re.sub(r"[^A-Za-z0-9_.=-]+", "_", key) + ext)

    def get(self, key: str):
        """``(value, array or None)`` of a finished unit, or ``None``."""
        path = self._path(key, ".json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            value = json.load(f)
        array = self._path(key, ".npy")
        return value, (np.load(array) if os.path.exists(array) else None)

    def put(self, key: str, value, array=None):
        """Keeps a finished unit (the array first, so a kept row always has its array)."""
        if array is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(array))
            write_atomic(self._path(key, ".npy"), buf.getvalue())
        write_atomic(self._path(key, ".json"), json.dumps(value))
        return value, array

    def kept(self, key: str, with_array: bool = False):
        """``get(key)``, or ``None`` where ``with_array`` asks for an array the unit lacks."""
        kept = self.get(key)
        return None if kept is None or (with_array and kept[1] is None) else kept

    def unit(self, key: str, fn, with_array: bool = False):
        """``fn()`` (a pair: a JSON value and an array or ``None``), computed once: what was
        kept under ``key`` if the unit finished before, else ``fn``'s result, which is kept.
        ``with_array``: a unit kept without its array is computed again."""
        kept = self.kept(key, with_array)
        return kept if kept is not None else self.put(key, *fn())

    def rng(self, key: str) -> np.random.Generator:
        return key_rng(self.seed, key)


def trained_score(config, model_dir: str):
    """The EMA score of the model of ``config`` trained (or reloaded) in ``model_dir`` by
    ``trainer.train_and_evaluate``, at exactly ``training.num_train_steps`` (the step a study's
    kept units are named by).

    Raises:
      ValueError: ``model_dir`` holds a model at another step.
    """
    result = trainer.train_and_evaluate(config, model_dir)
    step, steps = int(result["state"].step), int(config.training.num_train_steps)
    if step != steps:
        raise ValueError(f"{model_dir} holds a model at step {step}, but "
                         f"training.num_train_steps is {steps}: remove it or train to {step}")
    return result["score_fn"]


def sde_and_mixture(config) -> tuple[sde_lib.AbstractSDE, GaussianMixture]:
    """The SDE and the training data's Gaussian mixture of the model of ``config`` (mixture
    data), as ``trainer.train_and_evaluate`` builds them, without training or restoring it."""
    parsed = trainer.parse_config(config)
    return parsed.sde.build(), trainer.data.load_dataset(parsed.data,
                                                         parsed.data.train_split).gmm


def config_fingerprint(config, choosers) -> dict:
    """``config`` as a dict without the ``experiment`` fields ``choosers`` (those that only
    choose which units of a study run, not what a unit gives): the part of a
    ``ResultCache`` fingerprint that the config makes."""
    fingerprint = config.to_dict()
    for name in choosers:
        fingerprint["experiment"].pop(name, None)
    return fingerprint


def key_rng(seed: int, key: str) -> np.random.Generator:
    """A numpy generator seeded by ``seed`` and a string ``key`` (the same in every process)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def sampler_label(row: Mapping) -> str:
    """``row["sampler"]``, for an adaptive sampler with the NFE it measured (its NFE-target
    column is a tolerance: e.g. ``"pf_ode_adaptive (26 NFE)"`` in the column of NFE 10)."""
    sampler = sde_lib.SAMPLERS.get(row["sampler"])
    if sampler is None or not sampler.adaptive or row.get("nfe") is None:
        return row["sampler"]
    return f"{row['sampler']} ({float(row['nfe']):.0f} NFE)"


def pm(mean, sd) -> str:
    """``mean +- sd`` as table cells (``fmt``); ``n/a`` without a mean."""
    if mean is None:
        return "n/a"
    return fmt(mean) + ("" if sd is None else f" +- {fmt(sd)}")


def rerun_cell(row: Mapping, name: str, n: int) -> str:
    """``row[name] +- h`` as a table cell, ``h`` the half-width of the 95% interval a re-run
    over ``n`` other groups lands in (``claims.rerun_halfwidth`` of ``row[name + "_se"]``);
    ``n/a`` without a mean."""
    from experiments import claims

    if row.get(name) is None:
        return "n/a"
    return pm(row[name], claims.rerun_halfwidth(row.get(f"{name}_se"), n))



# ----- sample quality ----------------------------------------------------------------------------

def sliced_wasserstein(x, y, rng: jax.Array, num_projections: int = 256) -> float:
    """``SW_2`` between the empirical laws of ``x`` and ``y``, both ``(n, d)``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must be (n, d) arrays of the same shape, got {x.shape}, "
                         f"{y.shape}")
    dtype = np.result_type(x.dtype, y.dtype, np.float32)
    theta = np.array(jax.random.normal(rng, (x.shape[1], num_projections), dtype))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    # numpy's sort: faster than XLA's on the CPU
    px, py = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def component_log_probs(gmm: GaussianMixture, x) -> np.ndarray:
    """``log w_k + log N(x; mu_k, Sigma_k)``, ``(n, K)``."""
    x = np.asarray(x, np.float64)
    out = []
    for w, mu, cov in zip(np.asarray(gmm.weights), np.asarray(gmm.means), np.asarray(gmm.covs),
                          strict=True):
        L = np.linalg.cholesky(cov)
        z = np.linalg.solve(L, (x - mu).T)
        logdet = 2 * np.sum(np.log(np.diag(L)))
        out.append(np.log(w) - 0.5 * (np.sum(z**2, 0) + logdet + len(mu) * np.log(2 * np.pi)))
    return np.stack(out, axis=1)


def mode_weights(gmm: GaussianMixture, x) -> np.ndarray:
    """Fraction of the samples assigned to each component (most probable component), ``(K,)``."""
    k = np.argmax(component_log_probs(gmm, x), axis=1)
    return np.bincount(k, minlength=len(np.asarray(gmm.weights))) / len(k)


def mean_nll(gmm: GaussianMixture, x) -> float:
    """``-mean log p(x) / d`` in nats per dimension under the true law."""
    logp = np.logaddexp.reduce(component_log_probs(gmm, x), axis=1)
    return float(-np.mean(logp) / np.asarray(x).shape[1])


# ----- samplers, testbeds, training ---------------------------------------------------------------

def sampler_fn(sde, shape, method, num_steps, options):
    """``fn(key, score_fn) -> (x, nfe)``, jitted with ``score_fn`` as a pytree argument (a
    ``jax.tree_util.Partial``), so it compiles once for every score of the same structure; its
    first call raises ValueError when the method rejects the setting (e.g. reverse diffusion
    with a beta_i >= 1)."""
    return jax.jit(lambda k, score_fn: sde_lib.sample(k, sde, score_fn, shape, method=method,
                                                      num_steps=num_steps, **options))


def flow_kl_fn(sde, gmm, num, dim, method, num_steps):
    """``fn(key, score_fn) -> (KL, standard error)`` of a deterministic sampler's output to
    ``gmm`` (nats, ``sde_lib.evaluation.flow_kl`` over ``num`` prior draws), jitted with the
    score as a pytree argument."""
    return jax.jit(lambda key, score_fn: evaluation.flow_kl(
        jax.random.fold_in(key, 1), sde, score_fn, gmm.log_prob, num, dim, method, num_steps))


def gaussian_testbed(exp, seed: int | None = None) -> evaluation.GaussianLaw:
    """The Gaussian of the exact table: ``N(mu, diag(s^2))`` in ``exp.gaussian_dim``
    dimensions, ``s^2`` log-spaced over ``exp.gaussian_var``, ``mu ~ N(0, I)`` (seed ``seed``,
    by default ``exp.seed``)."""
    lo, hi = exp.gaussian_var
    key = jax.random.key(exp.seed if seed is None else seed)
    return evaluation.GaussianLaw(jax.random.normal(key, (exp.gaussian_dim,)),
                                  jnp.geomspace(lo, hi, exp.gaussian_dim))


def train_models(config, workdir: str, train_seeds) -> list[dict]:
    """Trains (or reloads) the model of ``config`` for each training seed in
    ``workdir/model_s<seed>``, every config checked first."""
    configs = {seed: trainer.override(config, {"training.seed": seed}) for seed in train_seeds}
    for c in configs.values():
        trainer.validate_config(c)
    return [trainer.train_and_evaluate(c, os.path.join(workdir, f"model_s{seed}"))
            for seed, c in configs.items()]
