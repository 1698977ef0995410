"""The documentation stays short, its links resolve and every registered name is documented.

Fast: reads Markdown files and registry keys only; nothing is traced or compiled.
"""

import pathlib
import re

import pytest

import models
import sde_lib
from sde_lib import losses, sampling

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"
MAX_README_LINES = 220

# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def markdown_files():
    files = [ROOT / "README.md", ROOT / "results" / "README.md", ROOT / "benchmarks" / "README.md"]
    return [f for f in files if f.exists()] + sorted(DOCS.glob("*.md"))


def relative_links(path):
    """The relative link targets of a Markdown file, anchors stripped (code blocks skipped)."""
    text = FENCE.sub("", path.read_text())
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        target = target.split("#", 1)[0]
        if target:
            targets.append(target)
    return targets


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move reference "
        f"material to docs/")


def test_docs_pages_exist():
    assert (ROOT / "results" / "README.md").exists()
    for page in ("sdes", "samplers", "losses", "models"):
        assert (DOCS / f"{page}.md").exists(), f"docs/{page}.md is missing"


def test_relative_links_resolve():
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_links_stay_inside_the_repository():
    outside = []
    root = ROOT.resolve()
    for path in markdown_files():
        for target in relative_links(path):
            resolved = (path.parent / target).resolve()
            if resolved != root and root not in resolved.parents:
                outside.append(f"{path.relative_to(ROOT)}: {target}")
    assert not outside, "links outside the repository:\n" + "\n".join(outside)


def test_link_parser(tmp_path):
    path = tmp_path / "page.md"
    path.write_text("[a](x.md#s) ![b](../y.png) [c](https://e.org) [d](#top)\n"
                    "```\n[e](z.md)\n```\n")
    assert relative_links(path) == ["x.md", "../y.png"]


def _undocumented(names, page):
    text = (DOCS / page).read_text()
    return sorted(name for name in names if f"`{name}`" not in text)


@pytest.mark.parametrize("page, names", [
    ("samplers.md", lambda: sampling.SAMPLERS),
    ("models.md", lambda: models.MODELS),
    ("losses.md", lambda: losses.LOSSES),
    ("sdes.md", lambda: sde_lib.SDES),
], ids=["samplers", "models", "losses", "sdes"])
def test_every_registered_name_is_documented(page, names):
    names = list(names())
    assert names
    missing = _undocumented(names, page)
    assert not missing, f"docs/{page} does not mention (in backticks) {missing}"
