"""Passwords, access tokens and API key secrets. The only module that touches bcrypt or JOSE.

bcrypt is slow on purpose, so it always runs in a worker thread. Tokens are HS256 JWTs checked
more strictly than python-jose does on its own: the header may only carry `alg`, `typ` and `kid`,
and `exp`, `iat`, `sub`, `iss`, `aud` and `jti` must all be present and valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import structlog
from jose import jwt
from jose.exceptions import JOSEError

from app.config import MIN_SECRET_BYTES, Settings
from app.errors import BadUserInput, Unauthenticated

logger = structlog.get_logger(__name__)

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 2048
MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated
_ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud", "jti")
API_KEY_PREFIX = "cvk_"
API_KEY_VISIBLE_CHARS = 12
_INVALID_TOKEN = "Invalid or expired credentials"  # noqa: S105  (a message)


def check_password_length(password: str, *, minimum: bool = True) -> bytes:
    encoded = password.encode("utf-8")
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise BadUserInput(
            f"Password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8 "
            f"(this one is {len(encoded)})"
        )
    if minimum and len(encoded) < MIN_PASSWORD_BYTES:
        raise BadUserInput(f"Password must be at least {MIN_PASSWORD_BYTES} bytes")
    return encoded


class PasswordHasher:
    """bcrypt in a worker thread, with a dummy hash so unknown emails cost as much as known ones."""

    def __init__(self, rounds: int) -> None:
        self._rounds = rounds
        self._dummy: bytes | None = None

    async def hash(self, password: bytes) -> str:
        hashed = await asyncio.to_thread(bcrypt.hashpw, password, bcrypt.gensalt(self._rounds))
        return hashed.decode("ascii")

    async def verify(self, password: bytes, password_hash: str | None) -> bool:
        """Check `password`; with no hash (unknown account) do the same work and return False."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = (await self.hash(secrets.token_bytes(16).hex().encode())).encode()
            await asyncio.to_thread(bcrypt.checkpw, password, self._dummy)
            return False
        return await asyncio.to_thread(bcrypt.checkpw, password, password_hash.encode("ascii"))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    expires_at: datetime
    token_id: str


class TokenCodec:
    def __init__(self, secret: str, *, issuer: str, audience: str, lifetime: timedelta) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.lifetime = lifetime

    def issue(self, user_id: uuid.UUID, *, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int((now + self.lifetime).timestamp()),
            "iss": self._issuer,
            "aud": self._audience,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(_INVALID_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
            if not set(header) <= _ALLOWED_HEADERS or header.get("alg") != ALGORITHM:
                raise Unauthenticated(_INVALID_TOKEN)
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "require_aud": True,
                    "require_iss": True,
                    "require_jti": True,
                },
            )
        except Unauthenticated:
            raise
        except (JOSEError, ValueError, TypeError, KeyError, AttributeError) as error:
            # Garbage tokens surface as many exception types inside python-jose.
            raise Unauthenticated(_INVALID_TOKEN) from error
        return self._checked(claims)

    def _checked(self, claims: dict[str, Any]) -> TokenClaims:
        # python-jose skips a claim's check when the claim is absent; require every one here.
        if any(name not in claims for name in _REQUIRED_CLAIMS):
            raise Unauthenticated(_INVALID_TOKEN)
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
            raise Unauthenticated(_INVALID_TOKEN)
        now = datetime.now(UTC).timestamp()
        if exp <= now or iat > now + 60:
            raise Unauthenticated(_INVALID_TOKEN)
        if claims["aud"] != self._audience or claims["iss"] != self._issuer:
            raise Unauthenticated(_INVALID_TOKEN)
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError as error:
            raise Unauthenticated(_INVALID_TOKEN) from error
        return TokenClaims(
            user_id=user_id,
            expires_at=datetime.fromtimestamp(exp, UTC),
            token_id=str(claims["jti"]),
        )


def new_api_key_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_api_key(credential: str) -> bool:
    return credential.startswith(API_KEY_PREFIX)


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def api_key_prefix(secret: str) -> str:
    return secret[:API_KEY_VISIBLE_CHARS]


def load_signing_secret(settings: Settings) -> str:
    """JWT_SECRET, or in development a random secret generated once and kept in the data folder."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.is_production:  # Settings refuses this already; kept as a second guard.
        raise RuntimeError("JWT_SECRET is required in production")
    path = settings.data_dir / ".jwt_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole to a private temporary file, then linked into place: when several
        # workers start at once exactly one link succeeds, and nobody reads a half-written file.
        secret = secrets.token_urlsafe(48)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".jwt_secret.")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secret)
            os.chmod(temporary, 0o600)
            os.link(temporary, path)
            _log_generated(path)
        except FileExistsError:
            pass  # another worker won the race; its secret is the one
        finally:
            os.unlink(temporary)
    secret = path.read_text(encoding="ascii").strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(f"{path} does not hold a usable secret: delete it or set JWT_SECRET")
    return secret


def _log_generated(path: Path) -> None:
    logger.warning(
        "jwt_secret_generated",
        path=str(path),
        hint="development only: set JWT_SECRET for anything shared; tokens die with this file",
    )
