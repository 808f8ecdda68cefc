"""Secrets and modes (design 14): no secret has a value in code.

In development (`LAKU_ENV` unset) every unset secret is generated once into
`<data_dir>/secrets/<setting>` (folder 0700, files 0600) and read back on every later start, so
the services, the provider sandboxes and the admin keep the same values across restarts. In
production (`LAKU_ENV=production`) nothing is generated: a process refuses to start while any
secret is unset, shorter than `MIN_SECRET_BYTES` or one of the values this code base once
shipped, or while `LAKU_ADMIN_EMAIL` is an address login would refuse.
"""

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import EmailStr, SecretStr, TypeAdapter, ValidationError

from laku.core.settings import Settings

MIN_SECRET_BYTES = 32
# Secrets that may stay unset in any mode: a mail relay need not ask for a password, photos
# kept on disk need no object storage key, and a service's own credential is otherwise
# derived from the service secret.
OPTIONAL_SECRETS = frozenset({"smtp_password", "media_s3_secret_access_key", "service_credential"})
# Every secret setting: each `SecretStr | None` field but the optional ones, so a secret added
# to Settings is generated and checked without being listed again here.
SECRET_SETTINGS: tuple[str, ...] = tuple(
    name
    for name, field in Settings.model_fields.items()
    if field.annotation == SecretStr | None and name not in OPTIONAL_SECRETS
)
# Values that were once defaults in code or are in the README and the development manifests
# (deploy/generate.py): anyone can read them, so production refuses them whatever their length.
KNOWN_DEMO_VALUES = frozenset(
    {
        "laku-dev-service-secret",
        "laku-dev-idempotency-key-secret",
        "laku-admin-demo",
        "laku-buyer-demo",
        "laku-factory-demo",
        "laku-dev-whatsapp-token",
        "QhJ1cOLW8bjtoq3R8lb7bgu0UQvXPd03w1RBCehIGec",
        "xnd_development_laku_sandbox_key",
        "laku-dev-xendit-callback-token",
        "biteship_test_laku_sandbox_key",
        "laku-dev-biteship-webhook-secret",
        "laku-dev-signing-key-encryption-key",
    }
)
_login_email: TypeAdapter[str] = TypeAdapter(EmailStr)


class UnsafeSettings(Exception):
    """The settings may not be started with; the message names each offending setting."""


def env_name(setting: str) -> str:
    return f"LAKU_{setting.upper()}"


def secrets_dir(settings: Settings) -> Path:
    return settings.data_dir / "secrets"


def _value(settings: Settings, name: str) -> str | None:
    secret: SecretStr | None = getattr(settings, name)
    return secret.get_secret_value() if secret is not None else None


def startup_problems(settings: Settings) -> list[str]:
    """What keeps these settings from starting: unusable in any mode, and in production also
    weak secrets. Empty when they may start."""
    problems = []
    try:
        _login_email.validate_python(settings.admin_email)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        problems.append(
            f"{env_name('admin_email')}={settings.admin_email!r} is not an address login "
            f"accepts ({reason})"
        )
    production = settings.env == "production"
    for name in SECRET_SETTINGS:
        if name == "service_secret" and settings.service_credential is not None:
            continue  # a process given its own credential needs no shared secret
        value = _value(settings, name)
        if value is None or value == "":
            problems.append(f"{env_name(name)} is not set")
        elif production and value in KNOWN_DEMO_VALUES:
            problems.append(f"{env_name(name)} is a published demo value")
        elif production and len(value.encode()) < MIN_SECRET_BYTES:
            problems.append(f"{env_name(name)} is shorter than {MIN_SECRET_BYTES} bytes")
    return problems


def check_startup(settings: Settings) -> None:
    problems = startup_problems(settings)
    if problems:
        mode = "production" if settings.env == "production" else "development"
        raise UnsafeSettings(f"refusing to start ({mode}): " + "; ".join(problems))


def generate_secret(name: str) -> str:
    """A fresh value: a P-256 private key (raw, base64url) for VAPID; otherwise 32 random bytes
    in base64url with padding, which is also a valid Fernet key."""
    if name == "webpush_vapid_private_key":
        key = ec.generate_private_key(ec.SECP256R1())
        raw = key.private_numbers().private_value.to_bytes(32, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def development_secrets(settings: Settings) -> dict[str, str]:
    """The `LAKU_*` environment of every secret not set: read from the data folder, generated
    there the first time. Only in development; production never generates."""
    if settings.env == "production":
        return {}
    unset = [name for name in SECRET_SETTINGS if not _value(settings, name)]
    if not unset:
        return {}
    folder = secrets_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # an existing folder too: it holds every secret
    return {env_name(name): _read_or_create(folder / name, name) for name in unset}


def development_role_secret(settings: Settings) -> str:
    """The secret the database roles' passwords derive from, for `laku up`'s migrations: in
    development kept in the data folder like the others, so an embedded database's roles keep
    their passwords across starts; in production a new one each start (the migrations set the
    passwords again). Not a setting: no service process is given it."""
    if settings.env == "production":
        return secrets.token_urlsafe(32)
    folder = secrets_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _read_or_create(folder / "database_role_secret", "database_role_secret")


def _read_or_create(path: Path, name: str) -> str:
    if not path.exists():
        # Written whole under another name, then linked into place: of two processes starting
        # at once, one's value wins and neither ever reads a half-written file.
        draft = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(generate_secret(name) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def with_development_secrets(settings: Settings) -> Settings:
    """`settings` with the development secrets filled in (unchanged in production)."""
    generated = development_secrets(settings)
    if not generated:
        return settings
    return settings.model_copy(
        update={
            name: SecretStr(generated[env_name(name)])
            for name in SECRET_SETTINGS
            if env_name(name) in generated
        }
    )
