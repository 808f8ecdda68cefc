import uuid

import httpx
import jwt
import pytest

from laku.core.security import service_credential
from laku.testing.platform import ADMIN_EMAIL, Platform, bearer
from tests.support import assert_problem, snapshot


def _register(platform: Platform, email: str, **extra) -> httpx.Response:
    body = {"email": email, "password": "a-good-password", "name": "Siti", **extra}
    return platform.client("auth").post("/api/auth/register", json=body)


def test_register_login_me_round_trip(platform: Platform) -> None:
    email = f"siti-{uuid.uuid4().hex[:8]}@laku.id"
    created = _register(platform, email, phone="+6281234567890")
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "buyer"
    assert created.json()["factoryId"] is None

    token = platform.login(email.upper(), "a-good-password")  # e-mail is case-insensitive
    me = platform.client("auth").get("/api/auth/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["email"] == email
    assert me.json()["phone"] == "+6281234567890"


def test_tokens_verify_against_published_jwks(platform: Platform) -> None:
    jwks = platform.client("auth").get("/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(platform.admin_token)["kid"]
    [key] = [key for key in jwks["keys"] if key["kid"] == kid]
    claims = jwt.decode(
        platform.admin_token,
        key=jwt.PyJWK(key),
        algorithms=["EdDSA"],
        audience="laku",
        issuer="laku-auth",
    )
    assert claims["role"] == "admin"
    assert all("d" not in key for key in jwks["keys"])  # only the public halves are published


def test_first_admin_comes_from_settings(platform: Platform) -> None:
    me = platform.client("auth").get("/api/auth/me", headers=bearer(platform.admin_token))
    assert me.json()["email"] == ADMIN_EMAIL
    assert me.json()["role"] == "admin"


def test_duplicate_email_is_a_conflict_and_changes_nothing(platform: Platform) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@laku.id"
    assert _register(platform, email).status_code == 201
    before = snapshot(platform, "auth")
    assert_problem(_register(platform, email), 409, "email_taken")
    assert snapshot(platform, "auth") == before


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "a-good-password", "name": "x"},
        {"email": "short@laku.id", "password": "short", "name": "x"},
        {"email": "noname@laku.id", "password": "a-good-password"},
        {"email": "extra@laku.id", "password": "a-good-password", "name": "x", "role": "admin"},
    ],
)
def test_invalid_registration_is_refused(platform: Platform, body: dict) -> None:
    before = snapshot(platform, "auth")
    assert_problem(platform.client("auth").post("/api/auth/register", json=body), 422)
    assert snapshot(platform, "auth") == before


def test_wrong_password_then_lockout(platform: Platform) -> None:
    email = f"lock-{uuid.uuid4().hex[:8]}@laku.id"
    _register(platform, email)
    attempt = {"email": email, "password": "wrong-password"}
    for _ in range(platform.settings.login_max_failures):
        assert_problem(
            platform.client("auth").post("/api/auth/login", json=attempt),
            401,
            "invalid_credentials",
        )
    locked = platform.client("auth").post(
        "/api/auth/login", json={"email": email, "password": "a-good-password"}
    )
    assert_problem(locked, 429, "login_locked")
    assert int(locked.headers["retry-after"]) > 0


def test_me_requires_a_valid_token(platform: Platform) -> None:
    auth = platform.client("auth")
    assert_problem(auth.get("/api/auth/me"), 401)
    assert_problem(auth.get("/api/auth/me", headers=bearer("not.a.jwt")), 401, "invalid_token")
    tampered = platform.admin_token[:-4] + (
        "AAAA" if platform.admin_token[-4:] != "AAAA" else "BBBB"
    )
    assert_problem(auth.get("/api/auth/me", headers=bearer(tampered)), 401, "invalid_token")


def test_only_admins_create_factory_accounts(platform: Platform) -> None:
    buyer = platform.new_buyer()
    body = {
        "email": f"factory-{uuid.uuid4().hex[:8]}@laku.id",
        "password": "a-good-password",
        "name": "Pabrik",
        "role": "factory",
        "factoryId": str(uuid.uuid4()),
    }
    auth = platform.client("auth")
    assert_problem(auth.post("/api/auth/users", json=body), 401)
    assert_problem(auth.post("/api/auth/users", json=body, headers=buyer.headers), 403)
    created = auth.post("/api/auth/users", json=body, headers=bearer(platform.admin_token))
    assert created.status_code == 201, created.text
    token = platform.login(body["email"], body["password"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["role"] == "factory"
    assert claims["factoryId"] == body["factoryId"]


def test_factory_account_needs_its_factory(platform: Platform) -> None:
    body = {
        "email": f"nofactory-{uuid.uuid4().hex[:8]}@laku.id",
        "password": "a-good-password",
        "name": "Pabrik",
        "role": "factory",
    }
    response = platform.client("auth").post(
        "/api/auth/users", json=body, headers=bearer(platform.admin_token)
    )
    assert_problem(response, 422)


def test_a_service_token_names_the_service_whose_credential_obtained_it(
    platform: Platform,
) -> None:
    response = platform.client("auth").post(
        "/api/auth/service-token",
        json={"serviceName": "product", "credential": platform.service_credential("product")},
    )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["accessToken"], options={"verify_signature": False})
    assert (claims["role"], claims["sub"]) == ("service", "service:product")


@pytest.mark.parametrize(
    ("service_name", "credential_of"),
    [
        # One service's own credential does not obtain another service's identity.
        ("wallet", "logistics"),
        ("payment", "order"),
        # A name that is no service of the platform gets nothing, even with its derived value.
        ("tests", "tests"),
        # The shared secret itself is no credential.
        ("payment", None),
    ],
)
def test_a_service_token_needs_that_services_own_credential(
    platform: Platform, service_name: str, credential_of: str | None
) -> None:
    secret = platform.settings.service_secret.get_secret_value()
    credential = secret if credential_of is None else service_credential(secret, credential_of)
    response = platform.client("auth").post(
        "/api/auth/service-token", json={"serviceName": service_name, "credential": credential}
    )
    assert_problem(response, 403, "invalid_service_credential")
