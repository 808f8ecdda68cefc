"""Token signing keys: encrypted at rest, rotated without logging anyone out.

The newest key signs (every auth process and every restart picks the same one). A key that was
replaced stays published in the JWKS for as long as a token it signed may still be alive, so a
rotation invalidates nothing."""

import base64
import itertools
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from laku.auth.models import SigningKey
from laku.core.security import ALGORITHM, Role
from laku.core.settings import Settings

_NONCE_BYTES = 12


class KeyCipher:
    """AES-256-GCM under a key derived (HKDF-SHA256) from `signing_key_encryption_key`; each
    ciphertext is bound to its key id, so one row's secret cannot be pasted into another's."""

    def __init__(self, secret: str):
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"laku auth signing keys"
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyCipher":
        if settings.signing_key_encryption_key is None:
            raise RuntimeError(
                "LAKU_SIGNING_KEY_ENCRYPTION_KEY is not set: auth encrypts its signing keys with it"
            )
        return cls(settings.signing_key_encryption_key.get_secret_value())

    def encrypt(self, kid: str, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, kid.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, kid: str, stored: str) -> bytes:
        raw = base64.urlsafe_b64decode(stored)
        return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], kid.encode())


# One writer at a time decides whether a key is missing (two auth processes starting together).
_KEYS_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('auth.signing_keys'))")


async def _insert_new_key(session: AsyncSession, cipher: KeyCipher) -> str:
    private_key = Ed25519PrivateKey.generate()
    kid = uuid.uuid4().hex
    public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key()))
    public_jwk |= {"kid": kid, "alg": ALGORITHM, "use": "sig"}
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    session.add(
        SigningKey(
            kid=kid,
            private_key_encrypted=cipher.encrypt(kid, pem),
            public_jwk=public_jwk,
            # The wall clock, not the transaction's start: the newest key is the one that signs.
            created_at=func.clock_timestamp(),
            updated_at=func.clock_timestamp(),
        )
    )
    return kid


async def ensure_key(session: AsyncSession, cipher: KeyCipher) -> None:
    """Create the first signing key if there is none."""
    await session.execute(_KEYS_LOCK)
    if await session.scalar(select(func.count()).select_from(SigningKey)) == 0:
        await _insert_new_key(session, cipher)
    await session.commit()


async def rotate(session: AsyncSession, cipher: KeyCipher) -> str:
    """A new key that signs from now on (once each auth process reloads, within
    `signing_key_reload_seconds`); returns its id."""
    await session.execute(_KEYS_LOCK)
    kid = await _insert_new_key(session, cipher)
    await session.commit()
    return kid


@dataclass(frozen=True)
class _Key:
    kid: str
    public_jwk: dict
    created_at: datetime


class TokenSigner:
    """The current signing key and the published ones, as last loaded from the database."""

    def __init__(
        self, kid: str, private_key: Ed25519PrivateKey, published: list[dict], loaded: datetime
    ):
        self.kid = kid
        self._private_key = private_key
        self._published = published
        self.loaded_at = loaded

    @classmethod
    async def load(
        cls, session: AsyncSession, cipher: KeyCipher, settings: Settings
    ) -> "TokenSigner":
        """The newest key signs (ties broken by id, so every process chooses the same one).
        The JWKS holds it, the previous one, and any older key a token may still carry: until
        the longest token lifetime has passed since the key that replaced it began signing
        (two rotations in a row log nobody out either)."""
        rows = (
            await session.execute(
                select(SigningKey.kid, SigningKey.public_jwk, SigningKey.created_at).order_by(
                    SigningKey.created_at.desc(), SigningKey.kid.desc()
                )
            )
        ).all()
        if not rows:
            raise RuntimeError("No signing key: ensure_key makes the first one")
        keys = [_Key(row.kid, row.public_jwk, row.created_at) for row in rows]
        current = keys[0]
        stored = await session.scalar(
            select(SigningKey.private_key_encrypted).where(SigningKey.kid == current.kid)
        )
        await session.commit()
        assert stored is not None
        private_key = serialization.load_pem_private_key(
            cipher.decrypt(current.kid, stored), password=None
        )
        assert isinstance(private_key, Ed25519PrivateKey)
        longest = timedelta(
            seconds=max(settings.access_token_ttl_seconds, settings.service_token_ttl_seconds)
        )
        now = datetime.now(UTC)
        published = [key.public_jwk for key in keys[:2]]  # the current and the previous
        for newer, older in itertools.pairwise(keys[1:]):
            if now - newer.created_at > longest:
                break
            published.append(older.public_jwk)
        return cls(current.kid, private_key, published, now)

    def jwks(self) -> dict:
        return {"keys": list(self._published)}

    def sign(
        self, settings: Settings, *, subject: str, role: Role, ttl_seconds: int, **claims
    ) -> str:
        """A token with a fresh `jti`; `claims` left None are omitted."""
        now = datetime.now(UTC)
        payload = {
            "sub": subject,
            "role": role.value,
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "iat": now,
            "exp": now + timedelta(seconds=ttl_seconds),
            "jti": uuid.uuid4().hex,
            **{k: v for k, v in claims.items() if v is not None},
        }
        return jwt.encode(
            payload, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid}
        )
