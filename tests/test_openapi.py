"""Every endpoint is documented in its service's OpenAPI with request and response schemas."""

import pytest

from laku.core.services import SERVICES
from laku.testing.platform import Platform

_WRITES = {"post", "put", "patch"}
# Actions named by their path alone carry no body.
_BODYLESS_ACTIONS = {
    "publish",
    "archive",
    "default",
    "read",
    "receive",
    "deliver",
    "cancel",
    "release",
    "deduct",
    "confirm",
    "expire",
    "process-expired",
    "stock-received",
    "retry",
    "retry-payout",
    "ready-to-ship",
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_operation_has_schemas(platform: Platform, service: str) -> None:
    spec = platform.client(service).get("/openapi.json").json()
    assert spec["paths"], f"{service} documents no paths"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{service}: {method.upper()} {path}"
            success = {code: r for code, r in operation["responses"].items() if code[0] == "2"}
            assert success, f"{where} documents no success response"
            for code, response in success.items():
                if code == "204":
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                assert schema, f"{where} has no response schema for {code}"
            if method in _WRITES and path.rsplit("/", 1)[-1] not in _BODYLESS_ACTIONS:
                body = operation.get("requestBody", {}).get("content", {})
                assert "application/json" in body, f"{where} has no request schema"
            if path not in ("/health", "/ready"):
                assert "422" in operation["responses"] or method == "get", where
