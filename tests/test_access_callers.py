"""The services a service calls admit it: every call a service makes through another's typed
client (`client.py`) lands on an operation whose declared access names the caller, so scoping
the service role never refuses a call the platform makes. Callers are found in the source: a
service whose code imports the client's module and calls the method (or passes it on, as the
platform audit does). The web front end calls with the signed-in person's token, not as a
service, and is not a caller here."""

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import laku
from laku.core.audit import AuditedClient
from laku.core.http import ServiceClient
from laku.core.security import ACCESS_EXTENSION
from laku.core.services import SERVICES

SOURCE = Path(laku.__file__).parent
# `laku.audit` is the platform audit, run by settlement-service's `/api/admin/audit` (and by
# `laku audit` as an admin): its calls are settlement's.
MODULE_CALLERS = {"audit.py": "settlement"}
PACKAGE_SERVICES = {spec.schema: name for name, spec in SERVICES.items()}


@dataclass(frozen=True)
class ClientCall:
    owner: str  # the service the client calls
    client_module: str
    method_name: str
    http_method: str
    path: str


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


AUDIT_PATH = AuditedClient.AUDIT_PATH
# ServiceClient's helpers, by the HTTP method each sends; their first argument is the path.
_CALL_METHODS = {
    "get_or_none": "GET",
    "get_model": "GET",
    "get_list": "GET",
    "get_all_pages": "GET",
    "post_model": "POST",
}


def _audit_path(cls: ast.ClassDef) -> str:
    for node in cls.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "AUDIT_PATH"
        ]:
            return ast.literal_eval(node.value)
    return AUDIT_PATH


def _client_calls() -> list[ClientCall]:
    calls = []
    for client in sorted(SOURCE.glob("*/client.py")):
        owner = PACKAGE_SERVICES.get(client.parent.name)
        if owner is None:
            continue
        tree = ast.parse(client.read_text())
        module = f"laku.{client.parent.name}.client"
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            if any(isinstance(base, ast.Name) and base.id == "AuditedClient" for base in cls.bases):
                # Inherited: `audit()` reads the class's AUDIT_PATH.
                calls.append(ClientCall(owner, module, "audit", "GET", _audit_path(cls)))
            for method in (n for n in cls.body if isinstance(n, ast.AsyncFunctionDef)):
                for node in ast.walk(method):
                    if not (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("request", "audit_page", *_CALL_METHODS)
                    ):
                        continue
                    args = node.args
                    if node.func.attr == "request":
                        http_method, path_node = ast.literal_eval(args[0]), args[1]
                    elif node.func.attr == "audit_page":
                        stream = ast.literal_eval(args[0])
                        http_method, path_node = "GET", ast.Constant(f"{AUDIT_PATH}/{stream}")
                    else:
                        http_method, path_node = _CALL_METHODS[node.func.attr], args[0]
                    path = _path_of(path_node)
                    calls.append(ClientCall(owner, module, method.name, http_method, path))
    return calls


def _path_of(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return node.value
    assert isinstance(node, ast.JoinedStr), ast.unparse(node)
    return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)


@cache
def _sources() -> dict[Path, tuple[str, ast.Module]]:
    return {path: (path.read_text(), ast.parse(path.read_text())) for path in SOURCE.rglob("*.py")}


def _local_modules(tree: ast.Module) -> set[str]:
    """Names bound to one of our own modules (`from laku.group_buying import audit`): a call
    on one is a module function, not a client's method."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("laku."):
            package = SOURCE.joinpath(*node.module.split(".")[1:])
            names.update(
                alias.asname or alias.name
                for alias in node.names
                if (package / f"{alias.name}.py").exists()
            )
    return names


def _uses_method(tree: ast.Module, method_name: str, owner_attribute: str) -> bool:
    """Whether the code calls a method `method_name`, or passes one on to be called, on
    something other than one of our modules."""
    modules = _local_modules(tree)

    def names_it(node: ast.expr) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == method_name
            # A client is an instance: a module's function or a class's column is not one.
            and not (
                isinstance(node.value, ast.Name)
                and (node.value.id in modules or node.value.id[:1].isupper())
            )
        )

    def passes_it(node: ast.expr) -> bool:
        # Passed on to be called, as `clients.payment.audit_payments`: named after its service.
        return (
            names_it(node)
            and isinstance(node.value, ast.Attribute)  # type: ignore[attr-defined]
            and node.value.attr == owner_attribute  # type: ignore[attr-defined]
        )

    return any(
        isinstance(node, ast.Call) and (names_it(node.func) or any(map(passes_it, node.args)))
        for node in ast.walk(tree)
    )


def _caller_of(relative: Path) -> str | None:
    if len(relative.parts) == 1:
        return MODULE_CALLERS.get(relative.name)
    return PACKAGE_SERVICES.get(relative.parts[0])


def _callers(call: ClientCall) -> set[str]:
    """The services whose code (outside the owner's package) imports the client's module and
    calls the method by name."""
    sources = _sources()
    importers = {
        _caller_of(path.relative_to(SOURCE))
        for path, (text, _) in sources.items()
        if call.client_module in text
    }
    callers = set()
    for path, (_, tree) in sources.items():
        relative = path.relative_to(SOURCE)
        caller = _caller_of(relative)
        # The owner's own package defines the endpoints; the platform audit module calls
        # settlement's client from settlement itself.
        if (
            caller is None
            or caller not in importers
            or relative.parts[0] == SERVICES[call.owner].schema
        ):
            continue
        if _uses_method(tree, call.method_name, SERVICES[call.owner].schema):
            callers.add(caller)
    return callers


@cache
def _access_rules(service: str) -> dict[tuple[str, str], dict[str, Any]]:
    app = importlib.import_module(f"{SERVICES[service].package}.app").create_app()
    return {
        (method.upper(), _template(path)): operation.get(ACCESS_EXTENSION, {})
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    }


CALLS = _client_calls()


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c.owner}.{c.method_name}")
def test_each_calling_service_is_admitted_where_it_calls(call: ClientCall) -> None:
    rules = _access_rules(call.owner)
    access = rules.get((call.http_method, _template(call.path)))
    assert access is not None, f"{call.owner} has no {call.http_method} {call.path}"
    if access.get("public"):
        return
    for caller in sorted(_callers(call)):
        assert caller in access.get("services", []), (
            f"{caller} calls {call.owner} {call.http_method} {call.path} "
            f"({call.method_name}) but is not admitted: {access}"
        )


def _direct_calls() -> list[tuple[str, str, str, str]]:
    """(caller, http method, path, where) for each call a service's own code makes straight
    through a service client (`.request(...)`, `.get_or_none(...)`) outside a `client.py`."""
    found = []
    for path, (_, tree) in _sources().items():
        relative = path.relative_to(SOURCE)
        caller = _caller_of(relative)
        if caller is None or relative.name == "client.py" or relative.parts[0] == "core":
            continue
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("request", "get_or_none")
                and node.args
            ):
                continue
            if node.func.attr == "request":
                if len(node.args) < 2 or not isinstance(node.args[0], ast.Constant):
                    continue
                http_method, path_node = node.args[0].value, node.args[1]
            else:
                http_method, path_node = "GET", node.args[0]
            if not isinstance(path_node, ast.Constant | ast.JoinedStr):
                continue
            found.append((caller, http_method, _path_of(path_node), f"{relative}:{node.lineno}"))
    return found


def test_direct_calls_outside_the_clients_are_admitted() -> None:
    calls = _direct_calls()
    for caller, http_method, path, where in calls:
        owners = [
            (service, access)
            for service in SERVICES
            if (access := _access_rules(service).get((http_method, _template(path)))) is not None
        ]
        assert owners, f"{where}: {http_method} {path} is no service's operation"
        for service, access in owners:
            assert access.get("public") or caller in access.get("services", []), (
                f"{where}: {caller} calls {service} {http_method} {path}, not admitted: {access}"
            )


def test_every_way_a_client_calls_is_read() -> None:
    """A new ServiceClient helper the calls above did not read would hide its calls from them."""
    helpers = {
        name
        for cls in (ServiceClient, AuditedClient)
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    assert helpers == {"request", "audit", "audit_page", *_CALL_METHODS}
