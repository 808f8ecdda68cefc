"""Service boundaries: a service reaches another only over HTTP, through its client module."""

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grimp
import pytest

from laku.core.services import SERVICES, WEB

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _lint_imports(python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_every_service_is_under_the_boundary_contract() -> None:
    contracts = _contracts()
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


def test_every_services_client_is_kept_from_every_services_models() -> None:
    contract = _contracts()["clients-without-models"]
    graph = grimp.build_graph("laku")

    def matched(expressions: list[str]) -> set[str]:
        return set().union(*(graph.find_matching_modules(e) for e in expressions))

    packages = {spec.package for spec in SERVICES.values()}
    assert {f"{package}.client" for package in packages} <= matched(contract["source_modules"])
    assert {f"{package}.models" for package in packages} <= matched(contract["forbidden_modules"])


@pytest.mark.parametrize(
    ("module", "models", "broken"),
    [
        # The wire models a client imports pulling in its own service's tables.
        ("product/schemas.py", "laku.product.models", "laku.product.client"),
        # A client reaching straight for another service's tables.
        ("wallet/client.py", "laku.order.models", "laku.wallet.client"),
    ],
)
def test_a_client_pulling_in_models_breaks_the_contract(
    tmp_path: Path, module: str, models: str, broken: str
) -> None:
    shutil.copytree(ROOT / "src" / "laku", tmp_path / "laku")
    importer = tmp_path / "laku" / module
    importer.write_text(f"from {models} import Base  # noqa\n" + importer.read_text())
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "A client module pulls in no service's models, its own included BROKEN" in result.stdout
    assert f"{broken} is not allowed to import {models}:" in result.stdout


def _imported_by(graph: grimp.ImportGraph, module: str) -> Iterator[str]:
    return iter(sorted(graph.find_modules_directly_imported_by(module)))


def _import_cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The groups of modules that import one another, directly or through others (Tarjan's
    strongly connected components, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, _imported_by(graph, root))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append(
                        (other, iter(sorted(graph.find_modules_directly_imported_by(other))))
                    )
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = set()
                    while (member := stack.pop()) != module:
                        on_stack.discard(member)
                        component.add(member)
                    on_stack.discard(module)
                    if component:
                        cycles.append(component | {module})
    return cycles


def test_no_module_imports_itself_through_others() -> None:
    assert _import_cycles(grimp.build_graph("laku")) == []


def test_an_import_circle_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circle import b  # noqa\n")
    (package / "b.py").write_text("from circle import c  # noqa\n")
    (package / "c.py").write_text("from circle import a  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles(grimp.build_graph("circle")) == [{"circle.a", "circle.b", "circle.c"}]
