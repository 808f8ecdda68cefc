"""Hostile input gets a 4xx, never a 5xx, and every response matches its documented schema.

Schemathesis generates requests from each service's own `/openapi.json` and sends them as an
admin, a buyer, a factory user and with no token. The platform here is its own (its own
database and processes, with the suite's settings), so what the fuzzer creates disturbs no other
test and no account of theirs is locked out. The examples come from a fixed seed
(`LAKU_FUZZ_SEED` to replay another); a failure names the seed, service, operation, caller and
a curl command that replays the case.
"""

import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from pydantic import TypeAdapter, ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from laku.core.schemas import MultilineText, Text, WireModel
from laku.core.services import SERVICES
from laku.group_buying.rules import ParticipantStatus
from laku.providers.biteship.client import WEBHOOK_SECRET_HEADER
from laku.testing.database import service_role_env, throwaway_database
from laku.testing.platform import Platform, bearer, free_port_offset, running_platform
from tests.support import assert_problem, snapshot

SEED = int(os.environ.get("LAKU_FUZZ_SEED", "20261201"))
# Examples per operation, caller and kind: the admin passes every authorisation, so its
# requests reach the most code, with data the schema allows (positive) and data it refuses
# (negative: out of bounds, wrong types, missing fields); the others mostly prove a refusal
# stays a 4xx. About 2,500 cases: 195-316 s on the two cores at a load average of 16-22 from
# other work; far less on a quiet machine.
EXAMPLES = {
    ("admin", GenerationMode.POSITIVE): 6,
    ("admin", GenerationMode.NEGATIVE): 3,
    ("buyer", GenerationMode.POSITIVE): 2,
    ("factory", GenerationMode.POSITIVE): 2,
    ("anonymous", GenerationMode.POSITIVE): 2,
}
CHECKS = [not_a_server_error, response_schema_conformance]
# Probes for orchestrators, not part of any service's API.
_PROBES = {"/health", "/ready", "/metrics"}
PASSWORD = "fuzz-password-123"


@dataclass
class Failure:
    service: str
    operation: str
    caller: str
    message: str
    curl: str

    def __str__(self) -> str:
        return (
            f"[{self.service}] {self.operation} as {self.caller}: {self.message}\n"
            f"  replay: {self.curl}"
        )


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_platform(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A platform of its own, started with the suite's settings on another database."""
    with throwaway_database(platform.database_url) as database_url:
        env = {
            **platform.supervisor.env,
            "LAKU_DATABASE_URL": database_url,
            "LAKU_PORT_OFFSET": str(free_port_offset()),
        }
        env.pop("LAKU_TRACE_DIR", None)
        with running_platform(
            env,
            database_url,
            log_dir=tmp_path_factory.mktemp("fuzz-logs"),
            service_env=service_role_env(database_url),
        ) as running:
            yield running


def _callers(platform: Platform) -> dict[str, dict[str, str]]:
    """The fuzzer's own accounts (never the suite's admin, whom failed logins could lock)."""
    auth = platform.client("auth")
    admin = bearer(platform.admin_token)
    suffix = uuid.uuid4().hex[:8]

    def created(response) -> dict:
        assert response.is_success, response.text
        return response.json()

    fuzz_admin = f"fuzz-admin-{suffix}@laku.id"
    created(
        auth.post(
            "/api/auth/users",
            headers=admin,
            json={"email": fuzz_admin, "password": PASSWORD, "name": "Fuzz", "role": "admin"},
        )
    )
    buyer = platform.new_buyer("Fuzz buyer")
    factory = created(
        platform.client("factory").post(
            "/api/factories",
            headers=admin,
            json={
                "name": "Pabrik Fuzz",
                "ownerName": "Fuzz",
                "phone": "+6281200000000",
                "address": "Jl. Fuzz 1",
                "postalCode": "12190",
            },
        )
    )
    factory_user = f"fuzz-factory-{suffix}@laku.id"
    created(
        platform.client("factory").post(
            f"/api/factories/{factory['id']}/users",
            headers=admin,
            json={"email": factory_user, "password": PASSWORD, "name": "Fuzz"},
        )
    )
    return {
        "admin": bearer(platform.login(fuzz_admin, PASSWORD)),
        "buyer": buyer.headers,
        "factory": bearer(platform.login(factory_user, PASSWORD)),
        "anonymous": {},
    }


def _provider_headers(platform: Platform) -> dict[str, str]:
    """Webhooks are fuzzed with their providers' valid tokens, so their bodies are parsed."""
    settings = platform.settings
    return {
        "x-callback-token": settings.xendit_callback_token.get_secret_value(),
        WEBHOOK_SECRET_HEADER: settings.biteship_webhook_secret.get_secret_value(),
    }


def _fuzz_operation(
    operation,
    base_url: str,
    session: requests.Session,
    service: str,
    caller: str,
    mode: GenerationMode,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    label = operation.label
    failures: list[Failure] = []
    statuses: Counter[int] = Counter()

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES[caller, mode],
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=operation.as_strategy(mode))
    def fuzz(case) -> None:
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        except requests.RequestException as exc:
            failures.append(Failure(service, label, caller, repr(exc), case.as_curl_command()))
            return
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:  # a check failed: record, go on
            curl = case.as_curl_command(headers=headers)
            failures.append(Failure(service, label, caller, str(exc)[:2000], curl))

    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to send wrong: an operation without parameters or body has no negative case.
        assert mode is GenerationMode.NEGATIVE, label
    tally.operations.add(f"{service} {label}")
    tally.cases[service] += statuses.total() + len(failures)
    tally.statuses.update(statuses)
    # The first failure of an operation is enough to replay it.
    tally.failures.extend(failures[:1])


def _fuzz_service(
    platform: Platform,
    service: str,
    caller: str,
    headers: dict[str, str],
    provider_headers: dict[str, str],
    tally: Tally,
) -> None:
    base_url = platform.url(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    with requests.Session() as session:
        for operation in operations:
            if operation.path in _PROBES:
                continue
            sent = provider_headers if operation.path.endswith("/webhook") else headers
            for wanted_caller, mode in EXAMPLES:
                if wanted_caller == caller:
                    _fuzz_operation(
                        operation, base_url, session, service, caller, mode, sent, tally
                    )


def _business_schemas() -> list[str]:
    # auth's accounts are left out: registering is what a caller without a token may do.
    return [spec.schema for spec in SERVICES.values() if spec.name != "auth"]


def test_hostile_input_never_gets_a_server_error(fuzz_platform: Platform) -> None:
    callers = _callers(fuzz_platform)
    provider_headers = _provider_headers(fuzz_platform)
    tally = Tally()
    started = time.monotonic()
    before = snapshot(fuzz_platform, *_business_schemas())
    for caller in ("anonymous", "buyer", "factory", "admin"):
        # One thread: Hypothesis's and Schemathesis's generation is not safe across threads.
        for service in SERVICES:
            _fuzz_service(fuzz_platform, service, caller, callers[caller], provider_headers, tally)
        if caller == "anonymous":
            after = snapshot(fuzz_platform, *_business_schemas())
            assert after == before, "requests without a token changed the platform's data"
    total = sum(tally.cases.values())
    print(
        f"\nfuzz (seed {SEED}): {len(tally.operations)} operations, {total} cases in "
        f"{time.monotonic() - started:.0f} s; cases per service {dict(tally.cases)}; "
        f"statuses {dict(sorted(tally.statuses.items()))}"
    )
    assert not tally.failures, (
        f"{len(tally.failures)} failures (seed {SEED}, LAKU_FUZZ_SEED to change it):\n"
        + "\n".join(str(failure) for failure in tally.failures)
    )


# What the fuzzer once found, asked for directly: each is a 422 and changes nothing. -----------

_PAST_BIGINT = "99999999999999999999"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_list_refuses_numbers_past_bigint(platform: Platform, service: str) -> None:
    """`?offset=99999999999999999999` reached PostgreSQL on every list endpoint (500)."""
    spec = platform.client(service).get("/openapi.json").json()
    # A list for buyers only refuses an admin before it reads its parameters.
    callers = [bearer(platform.admin_token), platform.new_buyer().headers]
    tried = 0
    for path, operations in spec["paths"].items():
        get = operations.get("get")
        names = {param["name"] for param in (get or {}).get("parameters", [])}
        for number in sorted({"offset", "limit"} & names):
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for headers in callers:
                response = platform.client(service).get(
                    url, params={number: _PAST_BIGINT}, headers=headers
                )
                if response.status_code != 403:
                    break
            assert_problem(response, 422, "invalid_input")
            tried += 1
    assert tried > 0 or service in _WITHOUT_LISTS, f"{service} has no list to try"


# Services whose reads are not paged.
_WITHOUT_LISTS = {"address", "auth"}


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("group-buying", "/api/group-buying/%00"),
        ("warehouse", "/api/reservations/%00"),
        ("warehouse", "/api/reservation-groups/session%3A%00/fulfilment"),
        ("payment", "/api/payments/by-code/PAY-%00"),
        ("logistics", "/api/shipments/track/WB%00"),
        ("product", "/api/products?q=bad%00"),
        ("factory", "/api/factories?q=bad%1B"),
        ("warehouse", "/api/admin/outbox/dead-letters?kind=%00"),
        ("warehouse", "/api/admin/audit/reservations?after=%00"),
        ("settlement", "/api/admin/audit?graceSeconds=1.2e16"),
    ],
)
def test_hostile_path_and_query_parameters_are_refused(
    platform: Platform, service: str, path: str
) -> None:
    response = platform.client(service).get(path, headers=bearer(platform.admin_token))
    assert_problem(response, 422, "invalid_input")


def test_a_dead_letter_id_past_bigint_is_refused(platform: Platform) -> None:
    response = platform.client("order").post(
        f"/api/admin/outbox/dead-letters/{_PAST_BIGINT}/retry",
        headers=bearer(platform.admin_token),
    )
    assert_problem(response, 422, "invalid_input")


_FACTORY = {
    "name": "Pabrik Aman",
    "ownerName": "Budi",
    "phone": "+6281200000001",
    "address": "Jl. Industri 2",
    "postalCode": "40115",
}
_ADDRESS = {
    "label": "Rumah",
    "recipientName": "Sari",
    "phone": "+6281234567890",
    "street": "Jl. Melati 3",
    "city": "Bandung",
    "province": "Jawa Barat",
    "postalCode": "40115",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "bad\u0000"), ("address", "Jl. A\nJl. B"), ("ownerName", "Bu\u001bdi")],
)
def test_factory_text_with_control_characters_is_refused(
    platform: Platform, field: str, value: str
) -> None:
    before = snapshot(platform, "factory")
    response = platform.client("factory").post(
        "/api/factories", json={**_FACTORY, field: value}, headers=bearer(platform.admin_token)
    )
    body = assert_problem(response, 422, "invalid_input")
    assert any(error["loc"][-1] == field for error in body["errors"]), body
    assert snapshot(platform, "factory") == before


def test_address_text_with_control_characters_is_refused(platform: Platform) -> None:
    buyer = platform.new_buyer()
    for name, value in [("notes", "ring twice\u0007"), ("street", "Jl. Melati\u0000")]:
        response = platform.client("address").post(
            "/api/addresses", json={**_ADDRESS, name: value}, headers=buyer.headers
        )
        assert_problem(response, 422, "invalid_input")
    listed = platform.client("address").get("/api/addresses", headers=buyer.headers)
    assert listed.json() == []


@pytest.mark.parametrize(
    ("field", "value"), [("password", "pass\u0000word"), ("name", "Sari \ud800")]
)
def test_what_the_database_cannot_store_is_refused_in_any_string(
    platform: Platform, field: str, value: str
) -> None:
    """Even where a field has no text type of its own (a password), PostgreSQL never sees a
    NUL, nor asyncpg a lone surrogate it cannot encode."""
    email = f"hostile-{uuid.uuid4().hex[:8]}@laku.id"
    body = {"email": email, "password": "password-123", "name": "Sari", field: value}
    # Escaped as JSON escapes it ("\\ud800"): the raw character has no UTF-8 to send.
    response = platform.client("auth").post(
        "/api/auth/register",
        content=json.dumps(body, ensure_ascii=True),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "invalid_input")
    assert not platform.sql("SELECT 1 FROM auth.users WHERE email = $1", email)


def test_text_types_keep_line_breaks_only_where_text_spans_lines() -> None:
    single = TypeAdapter(Text(100))
    multi = TypeAdapter(MultilineText(100))
    assert (
        multi.validate_python("Bahan katun.\r\n\tUkuran M-XL.") == "Bahan katun.\r\n\tUkuran M-XL."
    )
    assert single.validate_python("Jl. Melati 3") == "Jl. Melati 3"
    for hostile in ("a\u0000b", "a\u001bb", "a\u007fb", "a\u009bb"):
        with pytest.raises(ValidationError):
            multi.validate_python(hostile)
        with pytest.raises(ValidationError):
            single.validate_python(hostile)
    with pytest.raises(ValidationError):
        single.validate_python("line one\nline two")


class _Nested(WireModel):
    note: str


class _EveryKind(WireModel):
    name: str
    nickname: str | None = None
    tags: list[str] | None = None
    document: dict[str, Any] | None = None
    nested: _Nested | None = None
    either: int | str | None = None
    amount: int = 0
    ref: uuid.UUID | None = None
    at: datetime | None = None
    kind: Literal["a", "b"] = "a"
    status: ParticipantStatus = ParticipantStatus.PAID


def test_every_field_that_can_hold_text_refuses_what_the_database_cannot_store() -> None:
    """Only text-bearing fields are checked (for speed), and every one of them is: plain,
    optional, in a list, at any depth of a document, in a nested model."""
    valid = {"name": "Sari"}
    assert _EveryKind.model_validate(valid).nickname is None  # optional fields stay optional
    assert _EveryKind.model_validate(
        {**valid, "nickname": "S", "tags": ["a"], "document": {"k": ["v"]}, "nested": {"note": "n"}}
    )
    hostile = {
        "name": "Sa\u0000ri",
        "nickname": "\ud800",
        "tags": ["ok", "b\u0000d"],
        "document": {"k": {"deep": ["\u0000"]}},
        "nested": {"note": "\ud800"},
        "either": "\u0000",
    }
    for name, value in hostile.items():
        with pytest.raises(ValidationError) as refused:
            _EveryKind.model_validate({**valid, name: value})
        assert refused.value.errors()[0]["loc"][0] == name, refused.value.errors()
    with pytest.raises(ValidationError):
        _EveryKind.model_validate({**valid, "document": {"k\u0000": 1}})
