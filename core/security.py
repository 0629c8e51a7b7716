"""Password hashing (argon2id) and this API's own signed access tokens (joserfc, ES256)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.errors import BadCursor, ServiceUnavailable, Unauthorized
from core.settings import Settings
from core.store.paging import dump_position, load_position

ALGORITHM = "ES256"
USER_SCOPES = ("ratings:write",)
ADMIN_SCOPES = ("ratings:write", "movies:write", "imports:write", "users:admin")
# Clients act for operators' scripts, never for a person: they cannot rate.
CLIENT_SCOPES = ("movies:write", "imports:write", "users:admin")
CLIENT_SUBJECT = "client:"  # `sub` of a client's access token: "client:<client_id>"

# argon2id at the library's recommended cost (RFC 9106's low-memory profile). "test" makes the
# suite's hundreds of accounts cheap; Settings refuses it in production.
PASSWORD_COSTS: dict[str, PasswordHasher] = {
    "production": PasswordHasher(),
    "test": PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
}


class _Passwords:
    def __init__(self, cost: str) -> None:
        self.cost = cost
        self.hasher = PASSWORD_COSTS[cost]
        self._dummy: str | None = None

    @property
    def dummy(self) -> str:
        # Verifying against this keeps an unknown username as slow as a wrong password.
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy


_passwords = _Passwords("production")


def use_password_cost(cost: str) -> None:
    """Hash new passwords at this cost (each entry point calls it with its settings)."""
    global _passwords
    if _passwords.cost != cost:
        _passwords = _Passwords(cost)


def hash_password(password: str) -> str:
    return _passwords.hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        ok = _passwords.hasher.verify(password_hash or _passwords.dummy, password)
        return ok and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


class _PasswordPool:
    """Password hashing off the event loop, in its own bounded pool: `workers` hashes at
    once (argon2 releases the GIL) and `waiting` queued; past that a 503 at once, rather
    than every login waiting behind a flood of sign-ups."""

    def __init__(self, workers: int, waiting: int) -> None:
        self.shape = (workers, waiting)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="passwords")
        self._slots = workers + waiting
        self._taken = 0

    async def run(self, work: Any, *args: Any) -> Any:
        if self._taken >= self._slots:
            raise ServiceUnavailable(
                "Too many password checks at once; retry shortly.", headers={"Retry-After": "1"}
            )
        self._taken += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._taken -= 1


_pool = _PasswordPool(2, 16)


def use_password_pool(workers: int, waiting: int) -> None:
    """Size the pool passwords are hashed in (each entry point calls it with its settings)."""
    global _pool
    if _pool.shape != (workers, waiting):
        _pool = _PasswordPool(workers, waiting)


async def hash_password_pooled(password: str) -> str:
    """hash_password in the bounded pool; ServiceUnavailable (503) when it is full."""
    hashed: str = await _pool.run(hash_password, password)
    return hashed


async def verify_password_pooled(password_hash: str | None, password: str) -> bool:
    """verify_password in the bounded pool; ServiceUnavailable (503) when it is full."""
    ok: bool = await _pool.run(verify_password, password_hash, password)
    return ok


def scopes_for_role(role: str) -> tuple[str, ...]:
    return ADMIN_SCOPES if role == "admin" else USER_SCOPES


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified access token speaks for."""

    subject: str
    scopes: frozenset[str]
    session: str | None = None  # the refresh token family a person's token was issued in
    auth_time: int | None = None  # when the person logged in, on tokens a login issued

    @property
    def is_client(self) -> bool:
        return self.subject.startswith(CLIENT_SUBJECT)


def load_keyset(settings: Settings) -> KeySet:
    """Signing keys from TOKEN_SIGNING_KEYS, or a development key kept in DATA_DIR."""
    if settings.token_signing_keys is not None:
        return KeySet.import_key_set(json.loads(settings.token_signing_keys.get_secret_value()))
    if settings.environment == "production":
        raise RuntimeError("TOKEN_SIGNING_KEYS is required in production")
    return ensure_dev_keyset(settings.signing_keys_file)


def ensure_dev_keyset(path: Path) -> KeySet:
    """Read the development JWKS, generating it on first run."""
    if path.exists():
        return KeySet.import_key_set(json.loads(path.read_text()))
    keyset = generate_keyset()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keyset.as_dict(private=True)))
    path.chmod(0o600)
    return keyset


def generate_keyset() -> KeySet:
    return KeySet.generate_key_set("EC", "P-256", count=1)


class PageCursors:
    """Opaque, signed positions in a list (keyset pagination): the client cannot alter one
    or use it on another list. `scope` names the list: route, sort and filters."""

    def __init__(self, keyset: KeySet) -> None:
        # Derived from the token signing key: every API process shares it, and rotating
        # that key retires old cursors (a client then starts from the first page again).
        material = json.dumps(keyset.keys[0].as_dict(private=True), sort_keys=True)
        self._key = hashlib.sha256(b"page-cursors\0" + material.encode()).digest()

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()[:16]

    def encode(self, position: Any, *, scope: str) -> str:
        """The cursor for `position` in the list named `scope`."""
        data = dump_position(scope, position)
        return f"{_b64(data)}.{_b64(self._mac(data))}"

    def decode(self, cursor: str, *, scope: str) -> Any:
        """The position in a cursor issued for `scope`; BadCursor for anything else."""
        try:
            body, mac = cursor.split(".")
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            valid = hmac.compare_digest(
                base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)), self._mac(data)
            )
        except (ValueError, binascii.Error):
            valid = False
        if not valid:
            raise BadCursor("This cursor was not issued by this API or was altered.")
        issued_for, position = load_position(data)
        if issued_for != scope:
            raise BadCursor("This cursor belongs to a list with other filters or another sort.")
        return position


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues and verifies access tokens; the first key signs, all keys verify."""

    def __init__(self, settings: Settings, keyset: KeySet) -> None:
        if not keyset.keys:
            raise ValueError("the signing key set is empty")
        self._keyset = keyset
        self._signing_key = keyset.keys[0]
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self.ttl = settings.access_token_ttl
        self._claims = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
            leeway=5,
        )

    def public_jwks(self) -> dict[str, Any]:
        return dict(self._keyset.as_dict(private=False))

    def issue(
        self,
        *,
        subject: str,
        scopes: tuple[str, ...] | list[str],
        session: str | None = None,
        auth_time: int | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(12),
            "scope": " ".join(scopes),
        }
        if session is not None:
            claims["sid"] = session
        if auth_time is not None:  # issued by a login, not a refresh (OIDC Core's claim)
            claims["auth_time"] = auth_time
        header = {"alg": ALGORITHM, "kid": self._signing_key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._signing_key)

    def verify(self, token: str) -> Principal:
        try:
            decoded = jwt.decode(token, self._keyset, algorithms=[ALGORITHM])
            self._claims.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise Unauthorized("The access token is invalid or has expired.") from exc
        claims = decoded.claims
        return Principal(
            subject=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            session=str(claims["sid"]) if "sid" in claims else None,
            auth_time=int(claims["auth_time"]) if "auth_time" in claims else None,
        )
