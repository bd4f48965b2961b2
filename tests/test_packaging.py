"""Packaging: components/ and pipelines/ install as unlearnops.components / unlearnops.pipelines.

Checked three ways: pyproject's explicit package list covers every package folder; the editable
install imports them from the repository folders; a built wheel holds them and imports from a
plain ``--target`` folder with the repository off the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("unlearnops", "components", "pipelines")
IMPORT_CHECK = (
    "import json, unlearnops, unlearnops.components, unlearnops.components.scope, unlearnops.pipelines\n"
    "print(json.dumps({m.__name__: m.__file__ for m in (unlearnops, unlearnops.components, "
    "unlearnops.components.scope, unlearnops.pipelines)}))"
)


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools looks for ``package`` (longest package-dir prefix wins)."""
    best = max((k for k in package_dir if package == k or package.startswith(k + ".")), key=len, default="")
    rest = package[len(best):].lstrip(".")
    base = REPO / package_dir[best] if best else REPO
    return base.joinpath(*rest.split(".")) if rest else base


def _folder_packages(package_dir: dict[str, str]) -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under the mapped roots, by the package name it gets."""
    found: dict[str, Path] = {}
    for prefix, folder in package_dir.items():
        if folder not in ROOTS:
            continue
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
                continue
            found[".".join((prefix, *rel.parts)) if rel.parts else prefix] = init.parent
    return found


def test_package_list_matches_folders() -> None:
    config = _setuptools_config()
    package_dir: dict[str, str] = config["package-dir"]
    assert package_dir == {"unlearnops": "unlearnops", "unlearnops.components": "components",
                           "unlearnops.pipelines": "pipelines"}
    listed: list[str] = config["packages"]
    folders = _folder_packages(package_dir)
    missing = sorted(set(folders) - set(listed))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    for package in listed:
        folder = _package_folder(package, package_dir)
        assert (folder / "__init__.py").is_file(), f"{package} → {folder} has no __init__.py"
    assert len(listed) == len(set(listed)), "duplicate entries in [tool.setuptools] packages"


def _run_import(env: dict[str, str], cwd: Path) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_editable_install_imports_repo_folders(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    files = _run_import(env, cwd=tmp_path)  # cwd elsewhere: only the installed finder can help
    if not Path(files["unlearnops"]).is_relative_to(REPO):
        pytest.skip(f"unlearnops is not installed in editable mode here ({files['unlearnops']})")
    assert Path(files["unlearnops.components"]) == REPO / "components" / "__init__.py"
    assert Path(files["unlearnops.components.scope"]) == REPO / "components" / "scope" / "__init__.py"
    assert Path(files["unlearnops.pipelines"]) == REPO / "pipelines" / "__init__.py"


@pytest.mark.slow
def test_wheel_contains_and_imports_components(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    for folder in ROOTS:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(src)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = list(dist.glob("unlearnops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    listed = _setuptools_config()["packages"]
    for package in listed:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} missing from {wheel.name}"
    assert not any(n.startswith(("components/", "pipelines/")) for n in names), "top-level leak"
    assert "unlearnops/components/scope/__init__.py" in names
    assert "unlearnops/pipelines/__init__.py" in names

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    files = _run_import(env, cwd=elsewhere)
    for module, file in files.items():
        assert Path(file).is_relative_to(target), f"{module} imported from {file}, not the wheel"
    assert Path(files["unlearnops.components"]) == target / "unlearnops" / "components" / "__init__.py"


STEPS_AND_APPS = ("unlearnops.components", "unlearnops.pipelines", "unlearnops.dashboard")


def test_core_never_imports_components_pipelines_or_dashboard() -> None:
    """The core package stays independent of the steps and of the dashboard: no import of
    unlearnops.components / unlearnops.pipelines / unlearnops.dashboard. The dashboard
    (unlearnops/dashboard/) is an app over the steps, as the pipelines are, so it may import them."""
    import ast

    core = Path(__file__).resolve().parent.parent / "unlearnops"
    offenders = []
    for file in core.rglob("*.py"):
        if "dashboard" in file.relative_to(core).parts:
            continue
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            relative = isinstance(node, ast.ImportFrom) and node.level
            if relative and (node.module or "").startswith("dashboard"):  # from ..dashboard import x
                names.append("unlearnops.dashboard")
            offenders += [f"{file.name}: {n}" for n in names if n.startswith(STEPS_AND_APPS)]
    assert offenders == []
