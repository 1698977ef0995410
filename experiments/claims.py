"""Comparisons by rule: every pairwise statement a study makes, with its difference, standard error
and z, resolved only where ``|z| >= Z_RESOLVED``.

For two cells with means ``a, b`` and standard errors ``se_a, se_b`` (over training seeds, or
whatever the cell's interval is over), ``z = (a - b) / sqrt(se_a^2 + se_b^2)`` (independent
errors; cells that share seeds are positively correlated, so this is conservative). The verdict
is ``"A below B"`` where ``z <= -Z_RESOLVED``, ``"A above B"`` where ``z >= Z_RESOLVED`` and
``"not resolved"`` otherwise. A threshold ("the first NFE at which A is within the target") is
read with the same rule: a point counts as reached only where it is not resolved above the
target. ``write_claims`` writes ``claims.md`` (the rule, the number of comparisons, one line each)
and ``claims.csv`` beside a study's tables. ``rerun_halfwidth`` is the half-width of the 95%
interval a re-run with as many other seeds lands in, and ``rerun_coverage`` counts the cells a
re-run actually lands inside. ``leader`` and ``leaders`` turn claims into the statements a
README quotes (the lowest cell per context and what is not resolved from it), and
``readme_markers``, ``readme_block`` and ``replace_readme_block`` keep such a block between a
study's markers.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

Z_RESOLVED = 3.0
RULE = (f"A difference is resolved where |z| >= {Z_RESOLVED:g}, z = (A - B) / sqrt(se_A^2 + "
        f"se_B^2); otherwise it is not resolved, whatever the point estimates say.")
COLUMNS = ("context", "metric", "a", "b", "mean_a", "mean_b", "difference", "se", "z", "verdict")


def comparable(row: Mapping, name: str) -> bool:
    """Whether ``row`` has a finite ``name`` with a standard error ``<name>_se`` to compare."""
    return (row.get(name) is not None and math.isfinite(row[name])
            and row.get(f"{name}_se") is not None)


def compare(context: str, metric: str, a: str, mean_a: float, se_a: float, b: str,
            mean_b: float, se_b: float, se: float | None = None) -> dict:
    """One comparison of cell ``a`` with cell ``b`` on ``metric`` in ``context``; ``se``, where
    given, is the difference's own standard error (``paired``), else ``hypot(se_a, se_b)``."""
    diff = mean_a - mean_b
    se = math.hypot(se_a, se_b) if se is None else se
    z = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
    verdict = (f"{a} below {b}" if z <= -Z_RESOLVED else f"{a} above {b}" if z >= Z_RESOLVED
               else "not resolved")
    return {"context": context, "metric": metric, "a": a, "b": b, "mean_a": mean_a,
            "mean_b": mean_b, "difference": diff, "se": se, "z": z, "verdict": verdict}


PAIRED_RULE = ("Cells measured on the same seeds are compared by their paired differences: z = "
               "mean(A - B) / se(A - B), the difference's standard error from the spread of the "
               "per-run differences over the training seeds (``spread``), so the noise the two "
               "share cancels.")


def paired(context: str, metric: str, a: str, runs_a: Sequence[Mapping], b: str,
           runs_b: Sequence[Mapping], name: str) -> dict | None:
    """``a`` against ``b`` on ``name`` from their runs paired by ``(group, run)`` (the same
    training seed and the same sampling noise): the means are ``spread``'s of each, the
    difference's standard error ``spread``'s of the per-run differences. ``None`` where the
    runs do not pair up, a value is missing or not finite, or there is one group."""
    def values(runs):
        return {(r["group"], r["run"]): r.get(name) for r in runs}

    va, vb = values(runs_a), values(runs_b)
    if not va or set(va) != set(vb) or not all(
            v is not None and math.isfinite(v) for v in [*va.values(), *vb.values()]):
        return None
    diffs = spread([{"group": g, "d": va[g, u] - vb[g, u]} for g, u in va], "d")
    if diffs["d_se"] is None:
        return None
    mean_a, mean_b = spread(runs_a, name)[name], spread(runs_b, name)[name]
    return compare(context, metric, a, mean_a, 0.0, b, mean_b, 0.0, se=diffs["d_se"])


def pairwise(rows: Sequence[Mapping], item: str, metric: str, se: str,
             context: Sequence[str] = ()) -> list[dict]:
    """Every pair of rows that agree on the ``context`` columns, compared on ``metric`` (its
    standard error in column ``se``), named by their ``item`` column."""
    groups: dict[tuple, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in context), []).append(row)
    out = []
    for key, members in groups.items():
        where = ", ".join(f"{c} = {v}" for c, v in zip(context, key, strict=True))
        for r, s in itertools.combinations(members, 2):
            out.append(compare(where, metric, str(r[item]), float(r[metric]), float(r[se]),
                               str(s[item]), float(s[metric]), float(s[se])))
    return out


def spread(runs: Sequence[Mapping], name: str) -> dict:
    """``name``'s mean over the groups of ``runs`` (each run has a ``group``: its training
    seed), with ``name_sd`` (the sd of the group means), ``name_within_sd`` (the pooled sd
    between the runs of one group: the sampling's share) and ``name_se`` (the cell's standard
    error, which holds both the training seeds' and the sampling's noise).

    A group mean of ``m`` runs has variance ``sigma_train^2 + sigma_within^2 / m``, never less
    than its sampling share, so the standard error is ``sqrt(max(sd^2, within_sd^2 / m) /
    groups)``: the between-groups estimate, floored where it falls below what the sampling
    alone gives (the one-way random-effects estimate with the training variance truncated at
    0). A non-finite run makes the mean ``inf`` and the spreads ``None``."""
    values = [r[name] for r in runs if name in r]
    if not all(math.isfinite(v) for v in values):
        return {name: math.inf, f"{name}_sd": None, f"{name}_se": None,
                f"{name}_within_sd": None}
    groups: dict[int, list[float]] = {}
    for r in runs:
        if name in r:
            groups.setdefault(r["group"], []).append(r[name])
    means = np.array([np.mean(v) for v in groups.values()])
    sd = float(np.std(means, ddof=1)) if len(means) > 1 else None
    within = [np.var(v, ddof=1) for v in groups.values() if len(v) > 1]
    within_sd = float(np.sqrt(np.mean(within))) if within else None
    return {name: float(means.mean()), f"{name}_sd": sd,
            f"{name}_se": floored_se(sd, within_sd, len(values) / len(means), len(means)),
            f"{name}_within_sd": within_sd}


def over_seeds(runs: Sequence[Mapping], keys: Sequence[str],
               metrics: Sequence[tuple[str, str | None, bool]],
               means: Sequence[str] = ()) -> list[dict]:
    """Rows of one run each (a training seed: one model, measured once, each value with its own
    standard error) merged into one row per value of the ``keys`` columns, in first-seen order.

    For each ``(name, within, shared)`` of ``metrics``: ``name``, the mean over the ``n`` runs;
    ``name_seeds_sd``, the sd between them (``None`` for one); ``name_within``, the rms of the
    runs' own standard errors (column ``within``; ``None`` without one); and ``name_se``, the
    cell's standard error. Where ``shared``, the runs' own errors come from data every run
    shares (the same test digits, dequantization and probes), which do not average out over
    seeds: ``sqrt(sd^2 / n + within^2)``. Otherwise each run draws its own (samples):
    ``floored_se(sd, within, 1, n)``, the spread between seeds floored by what the draws alone
    give. With one run, ``name_se`` is ``within``. A missing or ``None`` value in any run (a
    non-finite result) makes the cell ``None``; ``finite`` counts the runs with the first
    metric (``"k/n"``), ``train_seeds`` is ``n``. The columns of ``means`` are averaged (e.g. an
    adaptive solver's NFE); any other column keeps its value where the runs agree and lists the
    runs' values (``" / "``) where they differ; ``within`` columns are dropped."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    dropped = {w for _, w, _ in metrics if w is not None} - {m for m, _, _ in metrics}
    out = []
    for rows in groups.values():
        n = len(rows)
        merged = {}
        for column in dict.fromkeys(c for r in rows for c in r):
            if column in dropped:
                continue
            values = [r.get(column) for r in rows]
            if all(v == values[0] for v in values):
                merged[column] = values[0]
            elif column in means and all(v is not None for v in values):
                merged[column] = float(np.mean(values))
            else:
                merged[column] = " / ".join("" if v is None else f"{v:g}"
                                            if isinstance(v, float) else str(v) for v in values)
        for name, within, shared in metrics:
            values = [r.get(name) for r in rows]
            cell = {name: None, f"{name}_se": None, f"{name}_seeds_sd": None,
                    f"{name}_within": None}
            if all(v is not None and math.isfinite(v) for v in values):
                errors = [r.get(within) for r in rows] if within else []
                w = (math.sqrt(float(np.mean(np.square(errors)))) if errors
                     and all(e is not None for e in errors) else None)
                sd = float(np.std(values, ddof=1)) if n > 1 else None
                if n == 1:
                    se = w
                elif shared:
                    se = math.sqrt(sd**2 / n + (w or 0.0) ** 2)
                else:
                    se = floored_se(sd, w, 1, n)
                cell = {name: float(np.mean(values)), f"{name}_se": se,
                        f"{name}_seeds_sd": sd, f"{name}_within": w}
            merged.update(cell)
        first = metrics[0][0]
        merged["finite"] = f"{sum(r.get(first) is not None for r in rows)}/{n}"
        merged["train_seeds"] = n
        merged.pop("train_seed", None)
        out.append(merged)
    return out


def floored_se(sd: float | None, within_sd: float | None, per_group: float,
               groups: int) -> float | None:
    """The standard error of a mean over ``groups`` group means whose sd is ``sd``, each the
    mean of ``per_group`` runs with pooled within-group sd ``within_sd`` (``spread``):
    ``sqrt(max(sd^2, within_sd^2 / per_group) / groups)``; ``None`` without ``sd``."""
    if sd is None:
        return None
    var = sd**2 if within_sd is None else max(sd**2, within_sd**2 / per_group)
    return math.sqrt(var / groups)


def rerun_halfwidth(se: float | None, n: int, n_rerun: int | None = None) -> float | None:
    """The half-width of the 95% interval in which a re-run's mean lands: a cell's mean ``m``
    over ``n`` independent runs (training seeds) with standard error ``se = s / sqrt(n)``, and
    ``n_rerun`` (default ``n``) runs with other seeds giving ``m'``: ``m' - m`` has variance
    ``sigma^2 (1 / n + 1 / n_rerun)``, so ``(m' - m) / (se sqrt(1 + n / n_rerun))`` is
    Student-t with ``n - 1`` degrees of freedom (``s`` from the committed runs alone), and ``m'``
    falls in ``m +- t_{0.975, n-1} sqrt(1 + n / n_rerun) se`` 95% of the time (``sqrt(2) se``
    for a re-run as large). ``None`` without a standard error or with ``n < 2``."""
    if se is None or n < 2 or not math.isfinite(se):
        return None
    from scipy import stats

    ratio = 1.0 if n_rerun is None else n / n_rerun
    return float(stats.t.ppf(0.975, n - 1) * math.sqrt(1.0 + ratio) * se)


def rerun_coverage(committed: Sequence[Mapping], rerun: Sequence[Mapping], keys: Sequence[str],
                   metrics: Sequence[str], groups: str) -> tuple[int, int]:
    """How many of ``committed``'s cells a re-run lands inside: for each row of ``committed``
    and each of ``metrics`` with a finite mean and standard error (``<metric>_se``), the row of
    ``rerun`` with the same ``keys`` is inside where ``|mean' - mean| <=
    rerun_halfwidth(se, n, n')``, ``n`` and ``n'`` the two rows' ``groups`` columns (``n' =
    n`` where the re-run's row has none). Rows are dicts of numbers or of CSV strings. Returns
    ``(inside, cells)``."""
    def number(value):
        return None if value in (None, "") else float(value)

    index = {tuple(str(r[k]) for k in keys): r for r in rerun}
    inside = cells = 0
    for row in committed:
        other = index.get(tuple(str(row[k]) for k in keys))
        for m in metrics:
            mean, se = number(row.get(m)), number(row.get(f"{m}_se"))
            if other is None or mean is None or se is None or not math.isfinite(mean):
                continue
            n_rerun = number(other.get(groups))
            half = rerun_halfwidth(se, int(number(row[groups])),
                                   None if n_rerun is None else int(n_rerun))
            value = number(other.get(m))
            if half is None or value is None:
                continue
            cells += 1
            inside += abs(value - mean) <= half
    return inside, cells


def rerun_check(committed: str, rerun: str, table: str, keys: Sequence[str],
                metrics: Sequence[str], groups: str | int = "groups"
                ) -> dict[str, tuple[int, int]]:
    """``rerun_coverage`` of the ``table`` (a ``common.write_table`` CSV) of a committed run's
    directory against a re-run's, per metric: ``{metric: (inside, cells)}``; ``groups`` is the
    column holding each row's number of groups, or that number for every row."""
    from experiments import common

    rows, rows2 = (common.read_table(os.path.join(d, table)) for d in (committed, rerun))
    if isinstance(groups, int):
        rows, groups = [dict(r, groups=groups) for r in rows], "groups"
    return {m: rerun_coverage(rows, rows2, keys, (m,), groups) for m in metrics}


def first_reaching(points: Sequence[tuple[float, float, float]], target: float,
                   target_se: float) -> float | None:
    """The first ``x`` of ``points`` ``(x, mean, se)`` (in the order given) whose mean is not
    resolved above ``target`` (``z < Z_RESOLVED`` against the target's ``target_se``); ``None``
    when every point is resolved above it."""
    for x, mean, se in points:
        if compare("", "", "point", mean, se, "target", target, target_se)["z"] < Z_RESOLVED:
            return x
    return None


def write_claims(workdir: str, claims: Sequence[Mapping], name: str = "claims",
                 rule: str = RULE) -> list[str]:
    """``<workdir>/<name>.md`` and ``.csv`` (written whole): the rule, how many comparisons were
    made and how many resolved, then one line per comparison; returns both paths."""
    os.makedirs(workdir, exist_ok=True)
    resolved = sum(c["verdict"] != "not resolved" for c in claims)
    lines = [f"# Claims ({len(claims)} comparisons, {resolved} resolved)", "", rule, ""]
    lines += [_line(c) for c in claims]
    md, csv_path = (os.path.join(workdir, f"{name}.{ext}") for ext in ("md", "csv"))
    for path, write in ((md, lambda f: f.write("\n".join(lines) + "\n")),
                        (csv_path, lambda f: _write_csv(f, claims))):
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    return [md, csv_path]


def write_with_headline(workdir: str, claims: Sequence[Mapping], headline: str,
                        rule: str = RULE) -> dict[str, str]:
    """``write_claims`` and ``<workdir>/headline.md`` (``headline``, the statements a README
    quotes, written whole); returns the three paths by file name."""
    paths = dict(zip(("claims.md", "claims.csv"), write_claims(workdir, claims, rule=rule),
                     strict=True))
    path = os.path.join(workdir, "headline.md")
    with open(path + ".tmp", "w") as f:
        f.write(headline)
    os.replace(path + ".tmp", path)
    return {**paths, "headline.md": path}


def _line(c: Mapping) -> str:
    """``- context: metric: A below B (A 0.1, B 0.2; difference -0.1 +- 0.02, z = -5.00)``."""
    where = f"{c['context']}: " if c["context"] else ""
    verdict = c["verdict"] if c["verdict"] != "not resolved" else (
        f"{c['a']} vs {c['b']} not resolved")
    return (f"- {where}{c['metric']}: {verdict} ({c['a']} {c['mean_a']:.4g}, {c['b']} "
            f"{c['mean_b']:.4g}; difference {c['difference']:.3g} +- {c['se']:.2g}, "
            f"z = {c['z']:.2f})")


def _write_csv(f, claims):
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    writer.writerows({k: c[k] for k in COLUMNS} for c in claims)


def leader(rows_of_claims: Sequence[Mapping]) -> dict[tuple[str, str], tuple]:
    """For each ``(context, metric)`` of pairwise claims (rows of ``claims.csv``, strings or
    numbers), in the order first seen: ``(best, mean, tied, above)``, the item with the lowest
    mean, its mean, the items not resolved from it (sorted) and how many are resolved above
    it."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for c in rows_of_claims:
        groups.setdefault((c["context"], c["metric"]), []).append(c)
    out = {}
    for key, cs in groups.items():
        means: dict[str, float] = {}
        for c in cs:
            means[c["a"]], means[c["b"]] = float(c["mean_a"]), float(c["mean_b"])
        best = min(means, key=means.get)
        tied = sorted(c["b"] if c["a"] == best else c["a"] for c in cs
                      if best in (c["a"], c["b"]) and c["verdict"] == "not resolved")
        out[key] = (best, means[best], tied, len(means) - 1 - len(tied))
    return out


def leaders(rows_of_claims: Sequence[Mapping]) -> list[str]:
    """``leader`` as one markdown list line per ``(context, metric)``: the lowest item, those
    not resolved from it, and how many are resolved above it."""
    lines = []
    for (context, metric), (best, mean, tied, above) in leader(rows_of_claims).items():
        where = f"{context}, {metric}" if context else metric
        if not above:
            lines.append(f"- {where}: none of {len(tied) + 1} resolved from the lowest mean "
                         f"({best}, {mean:.3g}).")
            continue
        text = f"- {where}: lowest {best} ({mean:.3g})"
        text += f", not resolved from it: {', '.join(tied)}" if tied else ""
        lines.append(text + f"; {above} of {above + len(tied)} resolved above it.")
    return lines


def readme_markers(study: str, generator: str) -> tuple[str, str]:
    """The lines around the block a README quotes from ``results/<study>/claims.csv`` by
    ``generator`` (a dotted name)."""
    return (f"<!-- {study} claims: generated by {generator} from results/{study}/claims.csv; "
            f"do not edit -->", f"<!-- end of the generated {study} claims -->")


def readme_block(text: str, markers: tuple[str, str]) -> str:
    """The lines between ``markers`` in ``text`` (each marker exactly once), without the
    newlines around them; ValueError naming the marker otherwise."""
    for marker in markers:
        if text.count(marker) != 1:
            raise ValueError(f"the README must hold {marker!r} exactly once, found "
                             f"{text.count(marker)}")
    return text.split(markers[0])[1].split(markers[1])[0].strip("\n")


def replace_readme_block(path: str, markers: tuple[str, str], block: str) -> None:
    """Rewrites the README at ``path`` (whole) with ``block`` between ``markers``."""
    with open(path) as f:
        text = f.read()
    readme_block(text, markers)  # both markers there, once
    start, rest = text.split(markers[0])
    end = rest.split(markers[1])[1]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{start}{markers[0]}\n{block.strip(chr(10))}\n{markers[1]}{end}")
    os.replace(tmp, path)
