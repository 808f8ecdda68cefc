"""Every operation's access, walked from each service's own `/openapi.json`: each operation
declares its rule once in code (a dependency, published as `x-laku-access`), and this test
tries it without a token, with bad tokens, as every role and as every service, checking that
no refused request changed the service's tables. A new operation without a declared rule
fails here."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from laku.core.security import ACCESS_EXTENSION, SERVICE_IDENTITIES
from laku.core.services import SERVICES
from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Platform, bearer
from tests.settlements import settle, successful_group
from tests.support import assert_problem, eventually, snapshot

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
USER_ROLES = ("buyer", "factory", "admin")


@dataclass(frozen=True)
class Operation:
    service: str
    method: str
    path: str
    spec: dict[str, Any]
    components: dict[str, Any]

    @property
    def access(self) -> dict[str, Any] | None:
        return self.spec.get(ACCESS_EXTENSION)

    @property
    def name(self) -> str:
        return f"{self.service} {self.method.upper()} {self.path}"

    def path_parameters(self) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == "path"]

    def url(self, values: dict[str, str] | None = None) -> str:
        """The path with each parameter filled: from `values`, else a made-up valid value."""
        url = self.path
        for parameter in self.path_parameters():
            name = parameter["name"]
            value = (values or {}).get(name) or str(_example(parameter["schema"], self.components))
            url = url.replace("{" + name + "}", value)
        return url

    def body(self) -> Any:
        content = self.spec.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            return None
        return _example(content["application/json"]["schema"], self.components)

    def call(
        self,
        client: httpx.Client,
        headers: dict[str, str] | None = None,
        *,
        valid_body: bool = True,
        **values: str,
    ) -> httpx.Response:
        """`valid_body=False` sends a body no operation accepts (where it takes one): a caller
        that passes the access check is then refused by validation, and nothing changes."""
        body = self.body() if valid_body or self.body() is None else "not an object"
        return client.request(
            self.method,
            self.url(values),
            json=body,
            headers={**(headers or {}), "Idempotency-Key": f"access-{uuid.uuid4()}"},
        )


def _example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A small valid value for `schema`: enough to get past input validation, so that what
    answers is the access check or the handler."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[1]], components)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if s.get("type") != "null"]
            return _example(options[0], components)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: _example(properties[name], components) for name in schema.get("required", [])}
    if kind == "array":
        return [_example(schema.get("items", {}), components)] * schema.get("minItems", 0)
    if kind == "integer":
        return max(1, schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1)
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    formats = {
        "uuid": lambda: str(uuid.uuid4()),
        "date": lambda: date.today().isoformat(),
        "date-time": lambda: datetime.now(UTC).isoformat(),
        "email": lambda: f"probe-{uuid.uuid4().hex[:8]}@laku.id",
    }
    if schema.get("format") in formats:
        return formats[schema["format"]]()
    return "probe" + "x" * max(0, schema.get("minLength", 1) - 5)


def _operations(platform: Platform, service: str) -> list[Operation]:
    spec = platform.client(service).get("/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    return [
        Operation(service, method, path, operation, components)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _protected(operations: list[Operation]) -> Iterator[Operation]:
    """The operations that need a bearer token (neither public nor a provider's webhook)."""
    for operation in operations:
        assert operation.access is not None, f"{operation.name} declares no access rule"
        if "roles" in operation.access:
            yield operation


def _schema(service: str) -> str:
    return SERVICES[service].schema


def _new_factory_user(platform: Platform, factory_id: str) -> str:
    email = f"factory-{uuid.uuid4().hex[:8]}@laku.id"
    response = platform.client("auth").post(
        "/api/auth/users",
        json={
            "email": email,
            "password": "factory-password",
            "name": "Pabrik Probe",
            "role": "factory",
            "factoryId": factory_id,
        },
        headers=bearer(platform.admin_token),
    )
    assert response.status_code == 201, response.text
    return platform.login(email, "factory-password")


@pytest.fixture(scope="module")
def role_headers(platform: Platform) -> dict[str, dict[str, str]]:
    return {
        "buyer": platform.new_buyer().headers,
        "factory": bearer(_new_factory_user(platform, str(uuid.uuid4()))),
        "admin": bearer(platform.admin_token),
    }


def _forged_token(platform: Platform) -> str:
    """An admin token in the right shape, naming the signing key in use, signed by another."""
    [kid, *_] = [
        key["kid"] for key in platform.client("auth").get("/.well-known/jwks.json").json()["keys"]
    ]
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "iss": platform.settings.jwt_issuer,
        "aud": platform.settings.jwt_audience,
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})


SERVICE_NAMES = sorted(SERVICES)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_operation_declares_who_may_call_it(platform: Platform, service: str) -> None:
    operations = _operations(platform, service)
    undeclared = [op.name for op in operations if op.access is None]
    assert undeclared == [], f"operations without {ACCESS_EXTENSION}: {undeclared}"
    for operation in operations:
        access = operation.access
        assert access is not None
        if "roles" in access:
            assert set(access["roles"]) <= set(USER_ROLES), operation.name
            assert set(access["services"]) <= SERVICE_IDENTITIES, operation.name
            assert access["roles"] or access["services"], f"{operation.name} admits nobody"
        else:
            assert access in ({"public": True}, {"webhook": True}), operation.name


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_without_a_valid_token_every_protected_operation_is_refused(
    platform: Platform, service: str
) -> None:
    client = platform.client(service)
    operations = _operations(platform, service)
    bad_tokens = {"malformed": "not.a.jwt", "forged": _forged_token(platform)}
    before = snapshot(platform, _schema(service))
    for operation in operations:
        access = operation.access or {}
        if access.get("webhook"):
            # A provider's webhook is known by its shared secret, not by a bearer token.
            assert_problem(operation.call(client), 401)
            assert_problem(operation.call(client, bearer(platform.admin_token)), 401)
            continue
        if access.get("public"):
            continue
        assert_problem(operation.call(client), 401)
        for token in bad_tokens.values():
            assert_problem(operation.call(client, bearer(token)), 401, "invalid_token")
    assert snapshot(platform, _schema(service)) == before


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_users_are_refused_where_their_role_is_not_admitted(
    platform: Platform, service: str, role_headers: dict[str, dict[str, str]]
) -> None:
    client = platform.client(service)
    before = snapshot(platform, _schema(service))
    tried = 0
    for operation in _protected(_operations(platform, service)):
        for role in USER_ROLES:
            if role not in operation.access["roles"]:
                response = operation.call(client, role_headers[role])
                assert response.status_code == 403, f"{operation.name} as {role}: {response.text}"
                tried += 1
    assert snapshot(platform, _schema(service)) == before
    assert tried > 0


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_operation_admits_only_the_services_that_call_it(
    platform: Platform, service: str
) -> None:
    client = platform.client(service)
    operations = list(_protected(_operations(platform, service)))
    before = snapshot(platform, _schema(service))
    for operation in operations:
        for caller in sorted(SERVICE_IDENTITIES):
            if caller not in operation.access["services"]:
                response = operation.call(client, platform.service_headers(caller))
                assert response.status_code == 403, f"{operation.name} as {caller}"
                assert response.json()["code"] == "service_not_allowed", response.text
    assert snapshot(platform, _schema(service)) == before
    # The callers that need an operation get past its access check. A body no operation
    # accepts keeps them from changing anything; an operation without a body acts on made-up
    # ids (releasing or voiding an unknown reference leaves its tombstone, by design).
    for operation in operations:
        for caller in operation.access["services"]:
            response = operation.call(client, platform.service_headers(caller), valid_body=False)
            assert response.status_code not in (401, 403), (
                f"{operation.name} as {caller}: {response.text}"
            )


@dataclass(frozen=True)
class FactoryResources:
    """Another factory's resources, by the path parameter that names them."""

    ids: dict[str, str]


# What a factory account gets for another factory's resource: 404, as if it did not exist;
# a factory's own id is public (the catalogue shows it), so asking for its account is a 403.
FOREIGN_RESOURCE_STATUS = {
    "purchase_order_id": 404,
    "invoice_id": 404,
    "settlement_id": 404,
    "factory_id": 403,
}


@pytest.fixture(scope="module")
def factory_b(platform: Platform) -> FactoryResources:
    """Factory B with a purchase order (reordered as its low stock was stocked), the invoice
    of that order's receipt, a payout account and a settlement."""
    admin = bearer(platform.admin_token)
    released = successful_group(platform, target_moq=5, joins=[5])
    settlement = settle(platform, released)
    catalog = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})
    warehouse = platform.client("warehouse")
    orders = eventually(
        lambda: warehouse.get(
            "/api/purchase-orders", params={"productId": catalog.product_id}, headers=admin
        ).json()["items"],
        timeout=20,
        every=0.2,
    )
    [purchase_order] = orders
    received = warehouse.post(f"/api/purchase-orders/{purchase_order['id']}/receive", headers=admin)
    assert received.status_code == 200, received.text
    [invoice] = warehouse.get(
        "/api/warehouse-invoices", params={"purchaseOrderId": purchase_order["id"]}, headers=admin
    ).json()["items"]
    return FactoryResources(
        {
            "purchase_order_id": purchase_order["id"],
            "invoice_id": invoice["id"],
            "settlement_id": settlement["id"],
            "factory_id": released.factory_id,
        }
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_factory_cannot_reach_another_factorys_resources(
    platform: Platform, service: str, factory_b: FactoryResources
) -> None:
    factory_a = bearer(_new_factory_user(platform, str(uuid.uuid4())))
    client = platform.client(service)
    before = snapshot(platform, _schema(service))
    tried = []
    for operation in _protected(_operations(platform, service)):
        names = [p["name"] for p in operation.path_parameters()]
        roles = operation.access["roles"]
        # Factory-facing operations (open to factories, not to buyers) on one resource; those
        # open to every user scope by the user and are walked by their services' own tests.
        if "factory" not in roles or "buyer" in roles or not names:
            continue
        unknown = set(names) - factory_b.ids.keys()
        assert not unknown, f"{operation.name}: no factory-B resource for {unknown}"
        [name] = names
        response = operation.call(client, factory_a, **factory_b.ids)
        assert response.status_code == FOREIGN_RESOURCE_STATUS[name], (
            f"{operation.name}: {response.text}"
        )
        tried.append(name)
    assert snapshot(platform, _schema(service)) == before
    expected = {"warehouse": 3, "settlement": 2}.get(service, 0)
    assert len(tried) == expected, tried
