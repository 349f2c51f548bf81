"""Passwords, our own access tokens and API key secrets.

bcrypt is slow on purpose, so it always runs in a worker thread, and every log-in attempt costs
one check at BCRYPT_ROUNDS whatever the account (see `PasswordHasher`). Our tokens are HS256 JWTs
(PyJWT) checked strictly: the header may only carry `alg`, `typ` and `kid`, and `exp`, `iat`,
`sub`, `iss`, `aud` and `jti` must all be present and valid. Tokens of an external issuer are
checked in `app.auth.external`, never here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import structlog

from app.config import MIN_SECRET_BYTES, Settings
from app.errors import BadUserInput, Unauthenticated

logger = structlog.get_logger(__name__)

ALGORITHM = "HS256"
# External issuers' tokens carry more claims than ours (Supabase's metadata, Keycloak's roles).
MAX_TOKEN_LENGTH = 8192
MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated
_ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "jti"]
API_KEY_PREFIX = "cvk_"
API_KEY_VISIBLE_CHARS = 12
INVALID_TOKEN = "Invalid or expired credentials"  # noqa: S105  (a message)
_IAT_TOLERANCE_SECONDS = 60
_BCRYPT_COST = re.compile(r"^\$2[abxy]?\$(\d{2})\$")


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


def bcrypt_cost(password_hash: str | bytes) -> int | None:
    """The cost factor a bcrypt hash was made with, or None if it is not a bcrypt hash."""
    text = password_hash.decode("ascii") if isinstance(password_hash, bytes) else password_hash
    match = _BCRYPT_COST.match(text)
    return int(match.group(1)) if match else None


def _dummy_hash(cost: int) -> bytes:
    # checkpw's work depends only on the cost in the salt, and no password matches a digest of
    # dots: a dummy of any cost is made instantly, without hashing anything.
    return bcrypt.gensalt(cost) + b"." * 31


class PasswordHasher:
    """bcrypt in a worker thread, with the same work for every log-in attempt.

    A wrong password must cost the same whether the email is unknown, belongs to an account
    hashed at BCRYPT_ROUNDS, or to one hashed at a lower cost before BCRYPT_ROUNDS was raised
    (such accounts are rehashed at their next successful log-in). bcrypt's work doubles with each
    cost step, so an account at cost `s` below the configured `c` is checked, then padded with
    dummy checks at costs `s .. c-1`: 2^s + (2^s + ... + 2^(c-1)) = 2^c, one check at `c`. An
    account above `c` (BCRYPT_ROUNDS lowered) costs what its hash costs until it is rehashed.
    """

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self._dummies = {cost: _dummy_hash(cost) for cost in range(4, rounds + 1)}

    async def hash(self, password: bytes) -> str:
        hashed = await asyncio.to_thread(bcrypt.hashpw, password, bcrypt.gensalt(self.rounds))
        return hashed.decode("ascii")

    def needs_rehash(self, password_hash: str) -> bool:
        return bcrypt_cost(password_hash) != self.rounds

    def _checks_for(self, password_hash: str | None) -> tuple[bytes | None, list[bytes]]:
        """The hash to check the password against (None: no account) and the dummy hashes to
        check after it, so that the whole costs one check at BCRYPT_ROUNDS."""
        if password_hash is None:
            return None, [self._dummies[self.rounds]]
        stored = password_hash.encode("ascii")
        cost = bcrypt_cost(stored)
        if cost is None:  # not a bcrypt hash: can never match, costs what an unknown email costs
            return None, [self._dummies[self.rounds]]
        return stored, [self._dummies[step] for step in range(max(cost, 4), self.rounds)]

    async def verify(self, password: bytes, password_hash: str | None) -> bool:
        """Check `password` against `password_hash` (None: unknown account, always False)."""
        stored, padding = self._checks_for(password_hash)
        return await asyncio.to_thread(_check, password, stored, padding)


def _check(password: bytes, stored: bytes | None, padding: list[bytes]) -> bool:
    matched = stored is not None and bcrypt.checkpw(password, stored)
    for dummy in padding:
        bcrypt.checkpw(password, dummy)
    return matched


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: uuid.UUID
    expires_at: datetime
    token_id: str


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, read without checking anything: only to pick its verifier."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


class TokenCodec:
    def __init__(self, secret: str, *, issuer: str, audience: str, lifetime: timedelta) -> None:
        self._secret = secret
        self.issuer = issuer
        self._audience = audience
        self.lifetime = lifetime

    def issue(self, user_id: uuid.UUID, *, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int((now + self.lifetime).timestamp()),
            "iss": self.issuer,
            "aud": self._audience,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(INVALID_TOKEN)
        try:
            header = jwt.get_unverified_header(token)
            if not set(header) <= _ALLOWED_HEADERS or header.get("alg") != ALGORITHM:
                raise Unauthenticated(INVALID_TOKEN)
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self.issuer,
                # iat is checked below with the tolerance another replica's clock needs.
                options={"require": _REQUIRED_CLAIMS, "strict_aud": True, "verify_iat": False},
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated(INVALID_TOKEN) from error
        return self._checked(claims)

    def _checked(self, claims: dict[str, Any]) -> TokenClaims:
        exp, iat = claims["exp"], claims["iat"]
        # PyJWT accepts numeric strings and floats; our tokens only ever carry integers.
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
            raise Unauthenticated(INVALID_TOKEN)
        if iat > datetime.now(UTC).timestamp() + _IAT_TOLERANCE_SECONDS:
            raise Unauthenticated(INVALID_TOKEN)
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError as error:
            raise Unauthenticated(INVALID_TOKEN) from error
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
