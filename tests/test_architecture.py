"""Service boundaries: a service reaches another only over HTTP, through its client module."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from laku.core.services import SERVICES, WEB

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_every_service_is_under_the_boundary_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}
    # The web front end calls the services like any service: only through their clients.
    packages = {spec.package for spec in SERVICES.values()} | {f"laku.{WEB.name}"}
    assert set(contracts["service-boundaries"]["modules"]) == packages
    assert packages <= set(contracts["kernel-independent"]["forbidden_modules"])
    assert packages <= set(contracts["providers-independent"]["forbidden_modules"])


def test_the_code_keeps_its_boundaries() -> None:
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_another_services_models_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "laku", tmp_path / "laku")
    service_module = tmp_path / "laku" / "product" / "app.py"
    service_module.write_text(
        "from laku.factory.models import Base  # noqa\n" + service_module.read_text()
    )
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "laku.product.app -> laku.factory.models" in result.stdout
