"""Tokens that rotate and revoke: short access tokens renewed by one-use refresh tokens, logout
refused everywhere within seconds, signing keys rotated without logging anyone out and
encrypted at rest, factory tokens always bound to their factory."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from laku.auth.keys import KeyCipher
from laku.core.db import Database, async_url
from laku.core.errors import Unauthorized
from laku.core.schemas import PageWindow
from laku.core.security import ALGORITHM, Principal, Role, TokenVerifier
from laku.testing.catalog import create_seed_catalog, created
from laku.testing.database import run
from laku.testing.platform import SECRETS_ENV, Platform, bearer
from tests.support import assert_problem, eventually

LAKU = str(Path(sys.executable).with_name("laku"))
SIGNING_KEY_ENCRYPTION_KEY = SECRETS_ENV["LAKU_SIGNING_KEY_ENCRYPTION_KEY"]


def _register_and_login(platform: Platform) -> tuple[str, dict]:
    email = f"tokens-{uuid.uuid4().hex[:10]}@laku.id"
    body = {"email": email, "password": "a-good-password", "name": "Rina"}
    created(platform.client("auth").post("/api/auth/register", json=body))
    return email, _login(platform, email)


def _login(platform: Platform, email: str, password: str = "a-good-password") -> dict:
    response = platform.client("auth").post(
        "/api/auth/login", json={"email": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _refresh(platform: Platform, refresh_token: str) -> httpx.Response:
    return platform.client("auth").post("/api/auth/refresh", json={"refreshToken": refresh_token})


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _refused_by(platform: Platform, token: str, timeout: float) -> dict[str, float]:
    """How long until address and wallet (other processes than auth) refuse `token` as
    revoked; fails if either still accepts it after `timeout` seconds."""
    started = time.monotonic()
    pending = {"address": "/api/addresses", "wallet": "/api/wallets/me"}
    refused_after: dict[str, float] = {}
    while pending:
        for service, path in list(pending.items()):
            response = platform.client(service).get(path, headers=bearer(token))
            if response.status_code == 401:
                assert response.json()["code"] == "token_revoked", response.text
                refused_after[service] = time.monotonic() - started
                del pending[service]
            else:
                assert response.status_code == 200, response.text
        assert time.monotonic() - started < timeout, f"still accepted by {sorted(pending)}"
        time.sleep(0.05)
    return refused_after


def test_login_gives_a_short_lived_access_token_and_a_refresh_token(platform: Platform) -> None:
    _, tokens = _register_and_login(platform)
    assert tokens["expiresIn"] == platform.settings.access_token_ttl_seconds == 900
    assert tokens["refreshExpiresIn"] == platform.settings.refresh_token_ttl_seconds
    claims = _claims(tokens["accessToken"])
    assert claims["exp"] - claims["iat"] == 900
    assert uuid.UUID(claims["sid"]) and len(claims["jti"]) == 32
    # Kept only as a digest: the database never holds a usable refresh token.
    stored = platform.sql(
        "SELECT token_hash FROM auth.refresh_tokens WHERE session_id = $1",
        uuid.UUID(claims["sid"]),
    )
    assert [row["token_hash"] for row in stored] == [
        hashlib.sha256(tokens["refreshToken"].encode()).hexdigest()
    ]


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_whole_family(
    platform: Platform,
) -> None:
    _, first = _register_and_login(platform)
    renewed = _refresh(platform, first["refreshToken"])
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()
    assert second["refreshToken"] != first["refreshToken"]
    old_claims, new_claims = _claims(first["accessToken"]), _claims(second["accessToken"])
    assert new_claims["sid"] == old_claims["sid"]  # same session (family), new token
    assert new_claims["jti"] != old_claims["jti"]
    assert platform.client("address").get("/api/addresses", headers=bearer(second["accessToken"]))

    # The used token again: taken for theft, the whole session ends.
    assert_problem(_refresh(platform, first["refreshToken"]), 401, "refresh_token_reused")
    assert_problem(_refresh(platform, second["refreshToken"]), 401, "session_revoked")
    took = _refused_by(platform, second["accessToken"], timeout=10)
    print(f"reuse -> access token refused after {took}")
    assert_problem(_refresh(platform, "not-a-refresh-token"), 401, "invalid_refresh_token")


def test_logout_refuses_the_same_access_token_on_every_service_within_seconds(
    platform: Platform,
) -> None:
    _, tokens = _register_and_login(platform)
    access = tokens["accessToken"]
    # Verified (and cached) by the other services before the logout.
    for service, path in (("address", "/api/addresses"), ("wallet", "/api/wallets/me")):
        response = platform.client(service).get(path, headers=bearer(access))
        assert response.status_code == 200, response.text

    logout = platform.client("auth").post("/api/auth/logout", headers=bearer(access))
    assert logout.status_code == 204, logout.text
    # Auth itself refuses at once; the others once they have polled the revocations.
    assert_problem(platform.client("auth").get("/api/auth/me", headers=bearer(access)), 401)
    took = _refused_by(platform, access, timeout=10)
    print(f"logout -> access token refused after {took}")
    interval = platform.settings.revocation_poll_interval_seconds
    assert max(took.values()) < interval + 3
    assert_problem(_refresh(platform, tokens["refreshToken"]), 401, "session_revoked")


def test_logout_with_the_refresh_token_alone_ends_the_session(platform: Platform) -> None:
    email, tokens = _register_and_login(platform)
    other = _login(platform, email)  # a second login (another device) is another session
    logout = platform.client("auth").post(
        "/api/auth/logout", json={"refreshToken": tokens["refreshToken"]}
    )
    assert logout.status_code == 204, logout.text
    assert_problem(_refresh(platform, tokens["refreshToken"]), 401, "session_revoked")
    _refused_by(platform, tokens["accessToken"], timeout=10)
    me = platform.client("auth").get("/api/auth/me", headers=bearer(other["accessToken"]))
    assert me.status_code == 200
    assert _refresh(platform, other["refreshToken"]).status_code == 200
    assert_problem(platform.client("auth").post("/api/auth/logout", json={}), 401)


def test_the_revocation_feed_is_for_services_only(platform: Platform) -> None:
    _, tokens = _register_and_login(platform)
    auth = platform.client("auth")
    assert_problem(auth.get("/api/auth/revocations"), 401)
    assert_problem(auth.get("/api/auth/revocations", headers=bearer(tokens["accessToken"])), 403)


def _jwks(platform: Platform) -> list[dict]:
    return platform.client("auth").get("/.well-known/jwks.json").json()["keys"]


def _jwks_kids(platform: Platform) -> list[str]:
    return [key["kid"] for key in _jwks(platform)]


def test_keys_rotate_signs_with_the_new_key_and_logs_nobody_out(platform: Platform) -> None:
    email, before = _register_and_login(platform)
    old_kid = jwt.get_unverified_header(before["accessToken"])["kid"]
    env = {**os.environ, **platform.supervisor.env}
    result = subprocess.run(
        [LAKU, "keys", "rotate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    new_kid = result.stdout.split()[-1]
    assert new_kid != old_kid

    # Every auth process picks the new key up within its reload interval.
    after = eventually(
        lambda: (
            login
            if jwt.get_unverified_header((login := _login(platform, email))["accessToken"])["kid"]
            == new_kid
            else None
        ),
        timeout=platform.settings.signing_key_reload_seconds + 5,
        every=0.2,
        what="auth signing with the new key",
    )
    assert _jwks_kids(platform)[:2] == [new_kid, old_kid]  # current first, previous kept

    for token in (before["accessToken"], after["accessToken"]):
        for service, path in (("address", "/api/addresses"), ("auth", "/api/auth/me")):
            response = platform.client(service).get(path, headers=bearer(token))
            assert response.status_code == 200, (service, response.text)
    # A refresh token issued before the rotation renews with the new key.
    renewed = _refresh(platform, before["refreshToken"])
    assert jwt.get_unverified_header(renewed.json()["accessToken"])["kid"] == new_kid


def test_signing_keys_are_encrypted_at_rest(platform: Platform) -> None:
    columns = {
        row["column_name"]
        for row in platform.sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'auth' AND table_name = 'signing_keys'"
        )
    }
    assert "private_pem" not in columns
    rows = platform.sql("SELECT kid, private_key_encrypted FROM auth.signing_keys")
    assert rows
    published = {key["kid"]: key for key in _jwks(platform)}
    for row in rows:
        stored = row["private_key_encrypted"]
        assert "PRIVATE KEY" not in stored and "BEGIN" not in stored
        pem = KeyCipher(SIGNING_KEY_ENCRYPTION_KEY).decrypt(row["kid"], stored)
        private_key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private_key, Ed25519PrivateKey)
        if row["kid"] in published:
            public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key()))
            assert public["x"] == published[row["kid"]]["x"]
        with pytest.raises(InvalidTag):  # another key, or another row's id, opens nothing
            KeyCipher("some-other-encryption-key-of-32-bytes").decrypt(row["kid"], stored)
        with pytest.raises(InvalidTag):
            KeyCipher(SIGNING_KEY_ENCRYPTION_KEY).decrypt("another-kid", stored)


def test_a_factory_account_without_its_factory_gets_no_token(platform: Platform) -> None:
    auth = platform.client("auth")
    admin = bearer(platform.admin_token)
    body = {
        "email": f"unbound-{uuid.uuid4().hex[:8]}@laku.id",
        "password": "a-good-password",
        "name": "Pabrik",
        "role": "factory",
    }
    assert_problem(auth.post("/api/auth/users", json=body, headers=admin), 422)

    bound = created(
        auth.post("/api/auth/users", json={**body, "factoryId": str(uuid.uuid4())}, headers=admin)
    )
    tokens = _login(platform, body["email"])
    # The account loses its factory (a data fix gone wrong): no token is issued any more.
    platform.sql("UPDATE auth.users SET factory_id = NULL WHERE id = $1", uuid.UUID(bound["id"]))
    login = auth.post(
        "/api/auth/login", json={"email": body["email"], "password": body["password"]}
    )
    assert_problem(login, 403, "factory_not_bound")
    assert_problem(_refresh(platform, tokens["refreshToken"]), 403, "factory_not_bound")


def _verifier_with_local_key() -> tuple[TokenVerifier, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    verifier = TokenVerifier(
        "http://127.0.0.1:9/unused", issuer="laku-auth", audience="laku", http=httpx.AsyncClient()
    )
    verifier.use_keys({"keys": [jwk | {"kid": "local", "alg": ALGORITHM}]})
    return verifier, key


def test_a_factory_token_without_factory_id_is_refused_by_every_verifier() -> None:
    verifier, key = _verifier_with_local_key()

    def token(**claims) -> str:
        payload = {
            "sub": str(uuid.uuid4()),
            "iss": "laku-auth",
            "aud": "laku",
            "exp": int(time.time()) + 60,
            "sid": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": "local"})

    with pytest.raises(Unauthorized):
        run(verifier.verify(token(role="factory")))
    factory_id = str(uuid.uuid4())
    principal = run(verifier.verify(token(role="factory", factoryId=factory_id)))
    assert str(principal.factory_id) == factory_id
    with pytest.raises(Unauthorized):  # a user's token without its session cannot be revoked
        run(verifier.verify(token(role="buyer", sid=None)))


def test_an_unbound_factory_principal_sees_nothing(platform: Platform) -> None:
    """The last guard, behind auth and the verifiers: every factory filter fails closed."""
    from laku.settlement.routes import list_settlements
    from laku.warehouse.invoices import list_invoices
    from laku.warehouse.routes import list_purchase_orders

    catalog = create_seed_catalog(platform, stock={"S": 3, "M": 8, "L": 8})  # S below reorder
    admin = bearer(platform.admin_token)
    eventually(
        lambda: (
            platform.client("warehouse")
            .get("/api/purchase-orders", params={"productId": catalog.product_id}, headers=admin)
            .json()["items"]
        ),
        timeout=15,
        every=0.2,
        what="a purchase order being raised",
    )

    unbound = Principal(subject=str(uuid.uuid4()), role=Role.FACTORY, session_id=uuid.uuid4())
    admin_principal = Principal(subject=str(uuid.uuid4()), role=Role.ADMIN)
    assert unbound.is_unbound_factory

    async def listed() -> dict[str, tuple[int, int]]:
        db = Database(async_url(platform.database_url), pool_size=1)
        try:
            seen = {}
            for name, principal in (("unbound", unbound), ("admin", admin_principal)):
                async with db.sessions() as session:
                    orders = await list_purchase_orders(
                        principal,
                        session,
                        PageWindow(limit=50, offset=0),
                        product_id=None,
                        status_filter=None,
                    )
                async with db.sessions() as session:
                    settlements = await list_settlements(
                        principal,
                        session,
                        PageWindow(limit=20, offset=0),
                        factory_id=None,
                        settlement_status=None,
                    )
                async with db.sessions() as session:
                    _, invoices = await list_invoices(
                        session,
                        principal,
                        status=None,
                        purchase_order_id=None,
                        limit=50,
                        offset=0,
                    )
                seen[name] = (orders.total, settlements.total, invoices)
            return seen
        finally:
            await db.dispose()

    seen = run(listed())
    assert seen["unbound"] == (0, 0, 0)
    assert seen["admin"][0] >= 1  # there was something to see


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_the_web_renews_its_login_with_the_refresh_token_and_logs_out_everywhere(
    platform: Platform,
) -> None:
    email, _ = _register_and_login(platform)
    with httpx.Client(base_url=platform.url("web"), timeout=10) as web:
        signed_in = web.post(
            "/login",
            data={
                "email": email,
                "password": "a-good-password",
                "next": "/me/addresses",
                "csrf": _csrf(web.get("/login")),
            },
        )
        assert signed_in.status_code == 303, signed_in.text
        first_access = web.cookies["laku_session"]
        first_refresh = web.cookies["laku_refresh"]
        assert web.get("/me/addresses").status_code == 200

        # The access token's cookie has run out: the refresh token renews the pair.
        web.cookies.delete("laku_session")
        page = web.get("/me/addresses")
        assert page.status_code == 200, page.headers
        renewed_access = web.cookies["laku_session"]
        assert renewed_access != first_access
        assert web.cookies["laku_refresh"] != first_refresh
        assert "httponly" in page.headers["set-cookie"].lower()
        assert _claims(renewed_access)["sid"] == _claims(first_access)["sid"]

        # Several requests at once with the same spent token share one renewal: none of them
        # presents a used refresh token (which would end the session).
        web.cookies.delete("laku_session")
        cookies = {"laku_refresh": web.cookies["laku_refresh"]}

        def open_page(_: int) -> httpx.Response:
            with httpx.Client(base_url=platform.url("web"), cookies=cookies, timeout=10) as tab:
                return tab.get("/me/addresses")

        with ThreadPoolExecutor(3) as pool:
            pages = list(pool.map(open_page, range(3)))
        assert [p.status_code for p in pages] == [200, 200, 200]
        assert len({p.cookies["laku_session"] for p in pages}) == 1
        for name in ("laku_session", "laku_refresh"):
            web.cookies.set(name, pages[0].cookies[name], domain="127.0.0.1", path="/")
        access = web.cookies["laku_session"]

        logged_out = web.post("/logout", data={"csrf": _csrf(web.get("/me/addresses"))})
        assert logged_out.status_code == 303
        assert "laku_session" not in web.cookies and "laku_refresh" not in web.cookies
    # Logged out at auth: the token the browser held is refused by every service.
    _refused_by(platform, access, timeout=10)
