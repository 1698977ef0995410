"""The package layout of DESIGN.md, checked on the source: imports point one way
(``benchmarks, experiments -> trainer -> models -> sde_lib``), no study imports another, and the
benchmarks use public names only."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = ("sde_lib", "models", "trainer", "experiments", "benchmarks")
# the modules of experiments/ that studies share (not studies themselves)
HELPERS = {"claims", "common", "digits_metric", "images"}


def _modules(package: str) -> dict[str, ast.Module]:
    """``{dotted name: parsed source}`` of every module under ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module) -> set[str]:
    """Every module ``tree`` imports, at any depth (function-level imports too): ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def _studies() -> set[str]:
    return {name for name in _modules("experiments")
            if name.count(".") == 1 and name.split(".")[1] not in HELPERS | {"configs"}}


def test_no_study_imports_another_study_and_helpers_import_no_study():
    studies = _studies()
    assert {"experiments.compare_samplers", "experiments.testbeds",
            "experiments.digits"} <= studies
    for name, tree in _modules("experiments").items():
        if name == "experiments":
            continue
        others = sorted(m for m in _imports(tree) & studies if m != name)
        assert not others, f"{name} imports the studies {others}"


@pytest.mark.parametrize("package, forbidden", [
    ("sde_lib", ("models", "trainer", "experiments", "benchmarks", "flax")),
    ("models", ("trainer", "experiments", "benchmarks")),
    ("trainer", ("experiments", "benchmarks")),
])
def test_imports_point_one_way(package, forbidden):
    for name, tree in _modules(package).items():
        bad = sorted(m for m in _imports(tree) if _top(m) in forbidden)
        assert not bad, f"{name} imports {bad}"


def _private_uses(tree: ast.Module) -> list[str]:
    """``from project.x import _y`` and ``alias._y`` on a name bound to a project module."""
    project_names, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in PROJECT:
                    project_names.add(alias.asname or _top(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and _top(node.module) in PROJECT:
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"from {node.module} import {alias.name}")
                project_names.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in project_names:
                found.append(f"{ast.unparse(node)}")
    return found


def test_benchmarks_use_public_names_only():
    benchmarks = _modules("benchmarks")
    assert benchmarks
    for name, tree in benchmarks.items():
        assert not _private_uses(tree), f"{name} uses private names {_private_uses(tree)}"


def test_the_private_name_check_sees_both_forms():
    tree = ast.parse("import trainer\nfrom sde_lib import _checks\nfrom trainer import run\n"
                     "trainer.run._x()\nrun._y\nnp._z\n")
    assert sorted(_private_uses(tree)) == ["from sde_lib import _checks", "run._y",
                                           "trainer.run._x"]
