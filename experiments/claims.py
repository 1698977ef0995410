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
re-run actually lands inside.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Mapping, Sequence

Z_RESOLVED = 3.0
RULE = (f"A difference is resolved where |z| >= {Z_RESOLVED:g}, z = (A - B) / sqrt(se_A^2 + "
        f"se_B^2); otherwise it is not resolved, whatever the point estimates say.")
COLUMNS = ("context", "metric", "a", "b", "mean_a", "mean_b", "difference", "se", "z", "verdict")


def compare(context: str, metric: str, a: str, mean_a: float, se_a: float, b: str,
            mean_b: float, se_b: float) -> dict:
    """One comparison of cell ``a`` with cell ``b`` on ``metric`` in ``context``."""
    diff, se = mean_a - mean_b, math.hypot(se_a, se_b)
    z = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
    verdict = (f"{a} below {b}" if z <= -Z_RESOLVED else f"{a} above {b}" if z >= Z_RESOLVED
               else "not resolved")
    return {"context": context, "metric": metric, "a": a, "b": b, "mean_a": mean_a,
            "mean_b": mean_b, "difference": diff, "se": se, "z": z, "verdict": verdict}


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


def rerun_halfwidth(se: float | None, n: int) -> float | None:
    """The half-width of the 95% interval in which a re-run's mean lands: a cell's mean ``m``
    over ``n`` independent runs (training seeds) with standard error ``se``, and another ``n``
    runs with other seeds giving ``m'``: ``(m' - m) / (sqrt(2) se)`` is Student-t with ``n - 1``
    degrees of freedom, so ``m'`` falls in ``m +- t_{0.975, n-1} sqrt(2) se`` 95% of the time.
    ``None`` without a standard error or with ``n < 2``."""
    if se is None or n < 2 or not math.isfinite(se):
        return None
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * math.sqrt(2.0) * se)


def rerun_coverage(committed: Sequence[Mapping], rerun: Sequence[Mapping], keys: Sequence[str],
                   metrics: Sequence[str], groups: str) -> tuple[int, int]:
    """How many of ``committed``'s cells a re-run lands inside: for each row of ``committed``
    and each of ``metrics`` with a finite mean and standard error (``<metric>_se``), the row of
    ``rerun`` with the same ``keys`` is inside where ``|mean' - mean| <=
    rerun_halfwidth(se, n)``, ``n`` the row's ``groups`` column. Rows are dicts of numbers or
    of CSV strings. Returns ``(inside, cells)``."""
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
            half = rerun_halfwidth(se, int(number(row[groups])))
            value = number(other.get(m))
            if half is None or value is None:
                continue
            cells += 1
            inside += abs(value - mean) <= half
    return inside, cells


def first_reaching(points: Sequence[tuple[float, float, float]], target: float,
                   target_se: float) -> float | None:
    """The first ``x`` of ``points`` ``(x, mean, se)`` (in the order given) whose mean is not
    resolved above ``target`` (``z < Z_RESOLVED`` against the target's ``target_se``); ``None``
    when every point is resolved above it."""
    for x, mean, se in points:
        if compare("", "", "point", mean, se, "target", target, target_se)["z"] < Z_RESOLVED:
            return x
    return None


def write_claims(workdir: str, claims: Sequence[Mapping], name: str = "claims") -> list[str]:
    """``<workdir>/<name>.md`` and ``.csv`` (written whole): the rule, how many comparisons were
    made and how many resolved, then one line per comparison; returns both paths."""
    os.makedirs(workdir, exist_ok=True)
    resolved = sum(c["verdict"] != "not resolved" for c in claims)
    lines = [f"# Claims ({len(claims)} comparisons, {resolved} resolved)", "", RULE, ""]
    lines += [_line(c) for c in claims]
    md, csv_path = (os.path.join(workdir, f"{name}.{ext}") for ext in ("md", "csv"))
    for path, write in ((md, lambda f: f.write("\n".join(lines) + "\n")),
                        (csv_path, lambda f: _write_csv(f, claims))):
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    return [md, csv_path]


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
