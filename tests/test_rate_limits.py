"""Rate limits and a login lockout that cannot be turned against its owner (issue 11.3).

Logins and registrations run against an auth-service of their own with the real limits (the
session's platform never reaches its limits: tests/support.py). Several client addresses are
simulated with X-Forwarded-For, which auth honours only from a trusted proxy (loopback by
default); a client bound to 127.0.0.2 shows that anyone else's is ignored. Joins run on the
session's platform: the unpaid units cap is real there, and the join limits are shown by
counters filled to their limit in group-buying's schema."""

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from laku.core.db import Database, async_url, service_metadata
from laku.core.rate_limit import Limit, RateLimited, claim, rate_limit_table
from laku.core.settings import Rate, RateLimits, Settings
from laku.testing.catalog import create_seed_catalog
from laku.testing.database import database_server, throwaway_database
from laku.testing.platform import (
    ADMIN_EMAIL,
    SECRETS_ENV,
    Account,
    Platform,
    free_port_offset,
    running_platform,
)
from tests.joins import available_stock, join_request, open_seed_session
from tests.support import assert_problem, snapshot

LIMITS = RateLimits()  # the defaults, as a deployment has them
PASSWORD = "the-owners-password"


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """auth-service alone, on its own database, with the real limits."""
    root = tmp_path_factory.mktemp("rate-limits")
    with database_server(root / "pg") as server, throwaway_database(server, ["auth"]) as url:
        env = {
            "LAKU_DATABASE_URL": url,
            "LAKU_PORT_OFFSET": str(free_port_offset()),
            "LAKU_ADMIN_EMAIL": ADMIN_EMAIL,
            **SECRETS_ENV,
            "LAKU_LOG_JSON": "true",
            "LAKU_PASSWORD_HASH_TIME_COST": "1",
            "LAKU_PASSWORD_HASH_MEMORY_KIB": "1024",
            "LAKU_DATABASE_POOL_SIZE": "3",
            "LAKU_DATABASE_MAX_OVERFLOW": "2",
        }
        with running_platform(env, url, log_dir=root / "logs", services=["auth"]) as platform:
            yield platform


def _address() -> str:
    """A client address of its own (TEST-NET-3 and 10/8, never reached)."""
    tail = uuid.uuid4().int
    return f"10.{tail % 256}.{tail // 256 % 256}.{tail // 65536 % 254 + 1}"


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _register(auth: Platform, address: str | None = None, email: str | None = None) -> str:
    email = email or f"owner-{uuid.uuid4().hex[:10]}@laku.id"
    response = auth.client("auth").post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD, "name": "Owner"},
        headers=_from(address or _address()),
    )
    assert response.status_code == 201, response.text
    return email


def _login(auth: Platform, email: str, password: str, address: str) -> httpx.Response:
    return auth.client("auth").post(
        "/api/auth/login", json={"email": email, "password": password}, headers=_from(address)
    )


def _assert_limited(response: httpx.Response, code: str, longest_wait: int) -> None:
    assert_problem(response, 429, code)
    assert 0 < int(response.headers["retry-after"]) <= longest_wait


def test_parallel_wrong_guesses_verify_at_most_the_allowed_passwords(auth: Platform) -> None:
    """100 wrong guesses at once from one address: each claims its failure before the hash is
    checked, so only `login_max_failures` are verified (401) and the rest refused (429)."""
    email = _register(auth)
    guesser = _address()
    allowed = auth.settings.login_max_failures

    async def guess_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=auth.url("auth"), timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/auth/login",
                        json={"email": email, "password": f"guess-{n}"},
                        headers=_from(guesser),
                    )
                    for n in range(100)
                )
            )

    answers = asyncio.run(guess_all())
    codes = Counter((r.status_code, r.json()["code"]) for r in answers)
    assert codes == {(401, "invalid_credentials"): allowed, (429, "login_locked"): 100 - allowed}
    for refused in (r for r in answers if r.status_code == 429):
        _assert_limited(refused, "login_locked", auth.settings.login_lockout_seconds)
    # The right password from the guessing address is not even checked now...
    _assert_limited(
        _login(auth, email, PASSWORD, guesser), "login_locked", auth.settings.login_lockout_seconds
    )
    # ...while the owner, elsewhere, logs in as ever.
    assert _login(auth, email, PASSWORD, _address()).status_code == 200


def test_guesses_from_one_address_do_not_lock_the_owner_out_from_another(auth: Platform) -> None:
    email = _register(auth)
    owner, guesser = _address(), _address()
    for _ in range(auth.settings.login_max_failures):
        assert_problem(_login(auth, email, "wrong-guess", guesser), 401, "invalid_credentials")
    assert_problem(_login(auth, email, "wrong-guess", guesser), 429, "login_locked")
    assert _login(auth, email, PASSWORD, owner).status_code == 200
    # The owner's success clears only the owner's own failures, not the guesser's lock.
    assert_problem(_login(auth, email, PASSWORD, guesser), 429, "login_locked")


def test_a_success_clears_its_own_failures(auth: Platform) -> None:
    email, address = _register(auth), _address()
    for _ in range(auth.settings.login_max_failures - 1):
        assert_problem(_login(auth, email, "typo", address), 401, "invalid_credentials")
    assert _login(auth, email, PASSWORD, address).status_code == 200
    for _ in range(auth.settings.login_max_failures):
        assert_problem(_login(auth, email, "typo", address), 401, "invalid_credentials")
    assert_problem(_login(auth, email, "typo", address), 429, "login_locked")


def test_forwarded_for_counts_only_from_a_trusted_proxy(auth: Platform) -> None:
    """A client at 127.0.0.2 (not a trusted proxy) claiming a new address on every guess is
    still counted at its own address, and locked out there."""
    email = _register(auth)
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=auth.url("auth"), transport=transport, timeout=10) as untrusted:

        def guess() -> httpx.Response:
            return untrusted.post(
                "/api/auth/login",
                json={"email": email, "password": "wrong-guess"},
                headers=_from(_address()),
            )

        for _ in range(auth.settings.login_max_failures):
            assert_problem(guess(), 401, "invalid_credentials")
        assert_problem(guess(), 429, "login_locked")
    assert _login(auth, email, PASSWORD, _address()).status_code == 200


def test_distributed_guessing_meets_the_per_account_ceiling(auth: Platform) -> None:
    """Guesses from ever new addresses each stay under the per-address limits; the account's
    ceiling across all addresses stops them (and, by design, its owner too until the window
    ends: README, "Rate limits")."""
    email = _register(auth)
    ceiling = LIMITS.login_failures_per_account
    for _ in range(ceiling.limit):
        assert_problem(_login(auth, email, "guess", _address()), 401, "invalid_credentials")
    _assert_limited(_login(auth, email, "guess", _address()), "login_locked", ceiling.seconds)
    _assert_limited(_login(auth, email, PASSWORD, _address()), "login_locked", ceiling.seconds)


def test_failures_from_one_address_across_accounts_are_limited(auth: Platform) -> None:
    """Credential stuffing: one address trying many accounts, a few guesses each."""
    stuffer = _address()
    per_address = LIMITS.login_failures_per_address
    for _ in range(per_address.limit):
        unknown = f"nobody-{uuid.uuid4().hex[:10]}@laku.id"
        assert_problem(_login(auth, unknown, "guess", stuffer), 401, "invalid_credentials")
    email = _register(auth)
    _assert_limited(_login(auth, email, PASSWORD, stuffer), "login_locked", per_address.seconds)
    assert _login(auth, email, PASSWORD, _address()).status_code == 200


def test_logins_per_address_are_limited_right_or_wrong(auth: Platform) -> None:
    email, address = _register(auth), _address()
    per_address = LIMITS.login_per_address
    for _ in range(per_address.limit):
        assert _login(auth, email, PASSWORD, address).status_code == 200
    _assert_limited(_login(auth, email, PASSWORD, address), "rate_limited", per_address.seconds)
    assert _login(auth, email, PASSWORD, _address()).status_code == 200


def test_registrations_are_limited_per_address_and_per_email(auth: Platform) -> None:
    address = _address()
    per_address, per_email = LIMITS.register_per_address, LIMITS.register_per_email
    for _ in range(per_address.limit):
        _register(auth, address)
    before = snapshot(auth, "auth")
    refused = auth.client("auth").post(
        "/api/auth/register",
        json={"email": f"late-{uuid.uuid4().hex[:8]}@laku.id", "password": PASSWORD, "name": "x"},
        headers=_from(address),
    )
    _assert_limited(refused, "rate_limited", per_address.seconds)
    assert snapshot(auth, "auth") == before  # refused before anything was written
    _register(auth, _address())

    # One e-mail asked about again and again (each `email_taken` tells it exists), from
    # ever new addresses.
    email = _register(auth)
    body = {"email": email, "password": PASSWORD, "name": "Again"}
    for _ in range(per_email.limit - 1):
        again = auth.client("auth").post("/api/auth/register", json=body, headers=_from(_address()))
        assert_problem(again, 409, "email_taken")
    again = auth.client("auth").post("/api/auth/register", json=body, headers=_from(_address()))
    _assert_limited(again, "rate_limited", per_email.seconds)


# Joins, on the session's platform ----------------------------------------------------------


def _join_as(
    platform: Platform, buyer: Account, session_id: str, variant_id: str, quantity: int, **headers
) -> httpx.Response:
    return platform.client("group-buying").post(
        f"/api/group-buying/{session_id}/join",
        json={"quantity": quantity, "variantId": variant_id},
        headers={**buyer.headers, **headers},
    )


def test_a_buyers_unpaid_units_per_group_buy_are_capped(platform: Platform) -> None:
    """Two joins at once by one buyer that together pass the cap: one is refused with 409
    `unpaid_units_limit` and its stock given back, though stock would allow both."""
    cap = platform.settings.max_unpaid_units_per_buyer_per_session
    stock = 3 * cap
    catalog = create_seed_catalog(platform, stock={"S": stock}, max_stock_level=stock)
    session = open_seed_session(platform, catalog)
    small = catalog.variants["S"]
    buyer = platform.new_buyer()
    assert_problem(
        join_request(platform, buyer, session["id"], small, cap + 1), 409, "unpaid_units_limit"
    )

    half = cap // 2 + 1

    async def join_twice() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("group-buying"), timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"/api/group-buying/{session['id']}/join",
                        json={"quantity": half, "variantId": small},
                        headers=buyer.headers,
                    )
                    for _ in range(2)
                )
            )

    answers = asyncio.run(join_twice())
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    [refused] = [r for r in answers if r.status_code == 409]
    assert_problem(refused, 409, "unpaid_units_limit")
    assert available_stock(platform, catalog)["S"] == stock - half
    # Up to the cap is still open to this buyer, and other buyers are not affected.
    assert join_request(platform, buyer, session["id"], small, cap - half).status_code == 201
    assert_problem(
        join_request(platform, buyer, session["id"], small, 1), 409, "unpaid_units_limit"
    )
    assert (
        join_request(platform, platform.new_buyer(), session["id"], small, cap).status_code == 201
    )


def _fill(platform: Platform, key: str, hits: int, seconds: int = 60) -> None:
    """A join counter at `hits`, as if that many joins had just been made."""
    platform.sql(
        "INSERT INTO group_buying.rate_limits (key, hits, window_ends_at) "
        "VALUES ($1, $2, now() + make_interval(secs => $3))",
        key,
        hits,
        seconds,
    )


def test_joins_are_limited_per_buyer_and_per_address(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    session = open_seed_session(platform, catalog)
    small = catalog.variants["S"]
    busy_buyer, other_buyer = platform.new_buyer(), platform.new_buyer()
    busy_address = _address()
    limits = platform.settings.rate_limits
    _fill(platform, f"join:buyer:{busy_buyer.id}", limits.join_per_buyer.limit)
    _fill(platform, f"join:address:{busy_address}", limits.join_per_address.limit)
    before = snapshot(platform, "group_buying", "warehouse", "payment")

    refused = _join_as(platform, busy_buyer, session["id"], small, 1)
    _assert_limited(refused, "rate_limited", 60)
    refused = _join_as(platform, other_buyer, session["id"], small, 1, **_from(busy_address))
    _assert_limited(refused, "rate_limited", 60)
    assert snapshot(platform, "group_buying", "warehouse", "payment") == before

    joined = _join_as(platform, other_buyer, session["id"], small, 1, **_from(_address()))
    assert joined.status_code == 201, joined.text
    [counted] = platform.sql(
        "SELECT hits FROM group_buying.rate_limits WHERE key = $1", f"join:buyer:{other_buyer.id}"
    )
    assert counted["hits"] == 1


def test_ended_join_counters_are_purged(platform: Platform) -> None:
    ended, running = f"join:buyer:ended-{uuid.uuid4()}", f"join:buyer:running-{uuid.uuid4()}"
    _fill(platform, ended, 1, seconds=-1)
    _fill(platform, running, 1, seconds=600)

    def keys() -> set[str]:
        rows = platform.sql(
            "SELECT key FROM group_buying.rate_limits WHERE key = ANY($1)", [ended, running]
        )
        return {row["key"] for row in rows}

    for _ in range(100):  # the retention sweep runs every 2 s on the test platform
        if keys() == {running}:
            break
        time.sleep(0.1)
    assert keys() == {running}
    platform.sql("DELETE FROM group_buying.rate_limits WHERE key = $1", running)


def test_rate_limits_setting_reads_partial_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the limits named change; the others keep their defaults."""
    monkeypatch.setenv(
        "LAKU_RATE_LIMITS", json.dumps({"join_per_buyer": {"limit": 7, "seconds": 30}})
    )
    limits = Settings().rate_limits
    assert (limits.join_per_buyer.limit, limits.join_per_buyer.seconds) == (7, 30)
    assert limits.register_per_address == RateLimits().register_per_address


def _web_login(web: httpx.Client, email: str, password: str, address: str) -> int:
    """A login through the web front end's form, by a browser at `address`."""
    page = web.get("/login", headers=_from(address))
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    answer = web.post(
        "/login",
        data={"email": email, "password": password, "csrf": match[1]},
        headers=_from(address),
    )
    return answer.status_code


def test_the_web_front_end_passes_on_each_browsers_address(platform: Platform) -> None:
    """Logins through the web are counted per browser, not all at the web's own address: one
    browser's wrong guesses lock out only that browser."""
    buyer = platform.new_buyer()
    guesser, owner = _address(), _address()
    with httpx.Client(base_url=platform.url("web"), timeout=10) as web:
        for _ in range(platform.settings.login_max_failures):
            assert _web_login(web, buyer.email, "wrong-guess", guesser) == 401
        assert _web_login(web, buyer.email, "wrong-guess", guesser) == 429
        assert _web_login(web, buyer.email, "buyer-password", owner) == 303


def test_a_limit_holds_across_processes(auth: Platform) -> None:
    """Claims through two separate connection pools (as two processes of a service have),
    100 at once: exactly the limit pass, whichever pool they come through, and the refused
    ones are told when the window ends."""
    table = rate_limit_table(service_metadata("auth"))
    key, rate = f"test:across-processes:{uuid.uuid4()}", Rate(limit=10, seconds=60)

    async def claim_all() -> Counter[str]:
        pools = [Database(async_url(auth.database_url), pool_size=5) for _ in range(2)]

        async def one(n: int) -> str:
            async with pools[n % 2].sessions() as session:
                try:
                    await claim(session, table, [Limit(key, rate)])
                except RateLimited as refused:
                    assert 0 < refused.extra["retry_after"] <= 60
                    return "refused"
                return "passed"

        try:
            return Counter(await asyncio.gather(*(one(n) for n in range(100))))
        finally:
            for pool in pools:
                await pool.dispose()

    assert asyncio.run(claim_all()) == {"passed": 10, "refused": 90}
    [row] = auth.sql("SELECT hits FROM auth.rate_limits WHERE key = $1", key)
    assert row["hits"] == 10  # refused claims counted nothing
