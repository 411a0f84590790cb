"""The dependency rule of DEVELOPERS.md, enforced: every project import is parsed with ``ast`` and checked.

Sub-packages (folders mapped in pyproject's package-dir) may import only what the rule allows; a new
import that breaks it fails here, naming the file, the line and the rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = "robocds"  # the learning package (robocds/*.py)

# Who may import whom (by sub-package). robocds.files (atomic writes), robocds.errors (user errors and how
# console scripts report them) and robocds.threads (thread defaults), all stdlib only, may be imported anywhere.
ALLOWED: dict[str, set[str]] = {
    "robocds.envs": set(),
    "robocds.datasets": {"robocds.envs"},
    CORE: set(),  # and robocds.datasets.schema, see below
    "robocds.train": {CORE, "robocds.datasets"},
    "robocds.eval": {"robocds.envs", CORE, "robocds.datasets"},
    "robocds.pipeline": {"robocds.envs", CORE, "robocds.datasets", "robocds.train", "robocds.eval"},
}
EVERYWHERE = {"robocds.files", "robocds.errors", "robocds.threads"}
CORE_MAY_READ = {"robocds.datasets.schema"}  # the learner knows the data only through the schema's names


def package_dirs() -> dict[str, str]:
    """``{"robocds.envs": "envs", ...}`` from pyproject.toml's ``[tool.setuptools.package-dir]``."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^"([\w.]+)"\s*=\s*"([\w/]+)"', section, flags=re.M))


def module_files() -> dict[str, Path]:
    """Every module of the distribution by its dotted name."""
    out = {}
    for package, folder in package_dirs().items():
        for path in sorted((REPO / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def sub_package(module: str) -> str:
    """The sub-package of the rule a dotted module name belongs to (``robocds.envs.tasks.lift`` -> envs)."""
    head = ".".join(module.split(".")[:2])
    return head if head in ALLOWED else CORE


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every ``robocds`` import in ``path``, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == CORE]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == CORE:
            found.append((node.lineno, node.module))
    return found


def violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in modules.items():
        source = sub_package(module)
        for line, target in project_imports(path):
            dest = sub_package(target)
            if dest == source or target in EVERYWHERE or dest in ALLOWED[source]:
                continue
            if source == CORE and target in CORE_MAY_READ:
                continue
            allowed = sorted(ALLOWED[source]) or ["nothing else of the project"]
            where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            bad.append(f"{where}:{line}: {source} imports {target} ({source} may import {allowed})")
    return bad


def test_every_sub_package_is_mapped_and_covered_by_the_rule():
    assert set(package_dirs()) - {"robocds.envs.tasks"} == set(ALLOWED)


def test_no_module_imports_against_the_dependency_rule():
    assert violations(module_files()) == []


def test_the_rule_catches_a_forbidden_import(tmp_path):
    envs_module = tmp_path / "bad.py"
    envs_module.write_text("def f():\n    from robocds.eval.report import markdown\n")
    core_module = tmp_path / "core.py"
    core_module.write_text("import robocds.envs.env\nfrom robocds.datasets.schema import BATCH_IMAGE\n")
    found = violations({"robocds.envs.bad": envs_module, "robocds.core": core_module})
    assert len(found) == 2
    assert "bad.py:2: robocds.envs imports robocds.eval.report" in found[0]
    assert "core.py:1: robocds imports robocds.envs.env" in found[1]
