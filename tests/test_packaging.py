"""Packaging checks: pyproject.toml and environment.yml agree, every import is declared,
and the entry points the README promises exist."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# conda-forge names that differ from the PyPI names in pyproject.toml
CONDA_TO_PIP = {"pytorch": "torch"}
# import names that differ from the distribution names
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "IPython": "ipykernel",  # ipykernel brings IPython
    "jupyter_client": "ipykernel",
    "jupyter_core": "ipykernel",  # a hard requirement of ipykernel and of jupyter_client
    "zmq": "ipykernel",  # pyzmq and traitlets: hard requirements of ipykernel and jupyter_client
    "traitlets": "ipykernel",
    "nbclient": "papermill",
    "matplotlib_inline": "ipykernel",
    # hard requirements of scikit-learn, so always installed with it
    "threadpoolctl": "scikit-learn",
    "joblib": "scikit-learn",
}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(?:>=\s*([0-9][^,;\s]*))?")


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, str | None]:
    match = REQUIREMENT.match(text)
    assert match, f"cannot parse requirement {text!r}"
    return normalise(match.group(1)), match.group(2)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, str | None]:
    project = pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return dict(parse_requirement(r) for r in reqs)


def environment_yml(text: str) -> tuple[list[str], list[str]]:
    """The conda and pip dependency lines of an environment.yml (its simple block form)."""
    conda, pip, section = [], [], None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith(" "):
            section = line.split(":", 1)[0].strip()
            continue
        if section != "dependencies":
            continue
        item = line.strip()
        if item == "- pip:":
            pip_indent = len(line) - len(line.lstrip())
            section = "dependencies"
            conda.append("__pip__")
            continue
        if item.startswith("- "):
            indent = len(line) - len(line.lstrip())
            if "__pip__" in conda and indent > pip_indent:
                pip.append(item[2:].strip())
            else:
                conda.append(item[2:].strip())
    return [c for c in conda if c != "__pip__"], pip


def environment_requirements() -> dict[str, str | None]:
    conda, pip = environment_yml((REPO / "environment.yml").read_text())
    found = {}
    for spec in conda:
        name = re.split(r"[<>=!\s]", spec, maxsplit=1)[0]
        if name in ("python", "pip"):
            continue
        bound = re.search(r">=\s*([0-9][^,\s]*)", spec)
        found[normalise(CONDA_TO_PIP.get(name, name))] = bound.group(1) if bound else None
    for spec in pip:
        if spec.startswith("-"):  # "--editable ." installs the course package itself
            continue
        name, bound = parse_requirement(spec)
        found[name] = bound
    return found


def test_environment_parser_reads_nested_pip_section():
    text = "name: x\ndependencies:\n  - numpy>=1.2\n  - pip\n  - pip:\n      - foo>=3\n"
    assert environment_yml(text) == (["numpy>=1.2", "pip"], ["foo>=3"])


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    pypi = pyproject_requirements()
    conda = environment_requirements()
    missing_in_env = sorted(set(pypi) - set(conda))
    missing_in_pyproject = sorted(set(conda) - set(pypi))
    assert not missing_in_env, f"in pyproject.toml but not environment.yml: {missing_in_env}"
    assert not missing_in_pyproject, (
        f"in environment.yml but not pyproject.toml: {missing_in_pyproject}"
    )
    different = {n: (pypi[n], conda[n]) for n in pypi if pypi[n] != conda[n]}
    assert not different, f"lower bounds differ (pyproject, environment.yml): {different}"


def test_environment_yml_installs_the_course_package_and_python_311():
    conda, pip = environment_yml((REPO / "environment.yml").read_text())
    assert "python=3.11" in conda
    assert any(line.replace("-e ", "--editable ") == "--editable ." for line in pip)


def _optional_modules(tree: ast.AST) -> set[str]:
    """Modules a file treats as optional: imported in a ``try`` that catches ImportError, or
    probed with ``importlib.util.find_spec("name")``."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {getattr(t, "id", None) for t in types}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                for inner in node.body:
                    for sub in ast.walk(inner):
                        if isinstance(sub, ast.Import):
                            optional |= {a.name.split(".")[0] for a in sub.names}
                        elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                            optional.add(sub.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            optional.add(node.args[0].value.split(".")[0])
    return optional


def _third_party_imports(folder: Path) -> dict[str, set[str]]:
    """{top-level module: files importing it} for the absolute, non-optional imports in every
    .py under folder."""
    stdlib = set(sys.stdlib_module_names)
    # modules that live in the scanned folder itself (tests/toy_catalogue.py, tests/browser/)
    local = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        optional = _optional_modules(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in optional or top in local:
                    continue
                if top in ("galaxy_helpers", "__future__", "conftest"):
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_import_scan_ignores_optional_imports_only(tmp_path):
    source = (
        "import numpy\n"
        "try:\n    import astropy.io\nexcept ImportError:\n    astropy = None\n"
        "import importlib.util\nHAS = importlib.util.find_spec('faiss')\n"
        "def f():\n    import faiss\n    import torch\n"
    )
    tree = ast.parse(source)
    assert _optional_modules(tree) == {"astropy", "faiss"}


def _undeclared(folder: Path, declared: set[str]) -> dict[str, list[str]]:
    undeclared = {}
    for module, files in _third_party_imports(folder).items():
        dist = normalise(IMPORT_TO_DIST.get(module, module))
        if dist not in declared:
            undeclared[module] = sorted(files)
    return undeclared


def test_every_import_of_the_package_is_a_declared_dependency():
    runtime = {parse_requirement(r)[0] for r in pyproject()["project"]["dependencies"]}
    undeclared = _undeclared(REPO / "galaxy_helpers", runtime)
    assert not undeclared, (
        "galaxy_helpers imports packages that pyproject.toml [project] dependencies (and "
        f"environment.yml) do not list: {undeclared}"
    )


def test_every_import_of_the_tests_is_declared():
    undeclared = _undeclared(REPO / "tests", set(pyproject_requirements()))
    assert not undeclared, (
        "tests import packages missing from pyproject.toml (dependencies or the test extra) "
        f"and environment.yml: {undeclared}"
    )


def test_makefile_has_the_promised_targets():
    text = (REPO / "Makefile").read_text()
    for target in ("env", "course", "test", "lint", "format"):
        assert re.search(rf"^{target}:", text, re.M), f"Makefile lacks target {target}"
    assert "MPLBACKEND" not in text, "the Makefile must not set MPLBACKEND globally"
    assert "pyproject.toml" in text  # the environment is rebuilt when dependencies change


def test_ci_script_is_strict_and_runs_make_test():
    path = REPO / ".ci" / "run"
    text = path.read_text()
    assert os.access(path, os.X_OK), ".ci/run must be executable (git update-index --chmod=+x)"
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test\b", text, re.M)
    assert "apt-get install" in text and "chromium" in text


def test_readme_shows_both_commands_and_their_plain_equivalents():
    text = (REPO / "README.md").read_text()
    for snippet in ("make course", "make test", "python -m galaxy_helpers.course run", "pytest"):
        assert snippet in text, f"README.md should mention `{snippet}`"


def test_course_command_line_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "galaxy_helpers.course", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--output", "--only", "--profile"):
        assert option in result.stdout


@pytest.mark.parametrize("notebook", sorted((REPO / "notebooks").glob("*.ipynb")), ids=str)
def test_notebooks_are_numbered(notebook):
    assert re.match(r"^\d\d_[a-z0-9_]+\.ipynb$", notebook.name), (
        f"{notebook.name}: notebooks are named NN_short_name.ipynb (lower case) so the course "
        "runner picks them up in order"
    )
