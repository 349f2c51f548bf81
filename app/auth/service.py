"""Accounts: sign-up, log-in, API keys, and turning a bearer credential into a caller.

Every function here runs inside the caller's unit of work (a session in a transaction) and never
commits. `authenticate` also names the caller for Row Level Security, so it must run before any
query on user data in that transaction.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey, User
from app.auth.security import (
    PasswordHasher,
    TokenCodec,
    api_key_prefix,
    check_password_length,
    hash_api_key,
    is_api_key,
    new_api_key_secret,
)
from app.db import new_id, set_rls_api_key, set_rls_login_email, set_rls_user
from app.errors import BadUserInput, Conflict, NotFound, Unauthenticated
from app.ratelimit.service import Limits

MAX_EMAIL_LENGTH = 254
MAX_API_KEY_NAME = 100
MAX_API_KEYS_PER_USER = 50
MAX_API_KEYS_LISTED = 100
# No control characters: PostgreSQL refuses NUL in text, and none belongs in an address.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
_BAD_LOGIN = "Invalid email or password"
# Writing last_used_at on every request would turn each read into a write; a minute is precise
# enough to tell a live key from a forgotten one.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: uuid.UUID
    via: Literal["token", "api_key"]


@dataclass(frozen=True, slots=True)
class Session:
    """What register and login return: the user and a fresh access token."""

    user: User
    access_token: str
    expires_in: int


def normalize_email(email: str) -> str:
    normalized = email.strip().lower()
    if len(normalized) > MAX_EMAIL_LENGTH or not _EMAIL.match(normalized):
        raise BadUserInput("Email is not a valid address")
    return normalized


def parse_bearer(header: str | None) -> str | None:
    """The credential in an `Authorization: Bearer <credential>` header, if there is one."""
    if not header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class Accounts:
    def __init__(self, hasher: PasswordHasher, tokens: TokenCodec, limits: Limits) -> None:
        self._hasher = hasher
        self._tokens = tokens
        self._limits = limits

    def _session_for(self, user: User) -> Session:
        return Session(
            user=user,
            access_token=self._tokens.issue(user.id),
            expires_in=int(self._tokens.lifetime.total_seconds()),
        )

    async def register(
        self, db: AsyncSession, email: str, password: str, *, client_ip: str | None
    ) -> Session:
        normalized = normalize_email(email)
        encoded = check_password_length(password)
        # Before the database and bcrypt: a refused sign-up costs nothing and changes nothing.
        await self._limits.check_registration(client_ip, normalized)
        if await self._find_by_email(db, normalized) is not None:
            raise Conflict("An account with this email already exists")
        user = User(id=new_id(), email=normalized, password_hash=await self._hasher.hash(encoded))
        await set_rls_user(db, user.id)
        db.add(user)
        try:
            async with db.begin_nested():
                await db.flush()
        except IntegrityError as error:  # a concurrent sign-up with the same email won the race
            raise Conflict("An account with this email already exists") from error
        return self._session_for(user)

    async def login(
        self, db: AsyncSession, email: str, password: str, *, client_ip: str | None
    ) -> Session:
        encoded = check_password_length(password, minimum=False)
        try:
            normalized = normalize_email(email)
        except BadUserInput:
            normalized = None
        # Every attempt counts, whatever its outcome, and a refused one never reaches bcrypt:
        # guessing costs the attacker their budget, not the server its CPU.
        await self._limits.check_login(client_ip, normalized)
        user = await self._find_by_email(db, normalized) if normalized else None
        # Unknown emails pay for one bcrypt check too, so timing does not reveal accounts.
        if not await self._hasher.verify(encoded, user.password_hash if user else None):
            raise Unauthenticated(_BAD_LOGIN)
        assert user is not None
        await set_rls_user(db, user.id)
        return self._session_for(user)

    async def _find_by_email(self, db: AsyncSession, email: str) -> User | None:
        await set_rls_login_email(db, email)
        return (await db.execute(select(User).where(User.email == email))).scalar_one_or_none()

    async def authenticate(self, db: AsyncSession, credential: str | None) -> Caller:
        """The caller behind a bearer credential (access token or API key), or Unauthenticated."""
        if not credential:
            raise Unauthenticated()
        if is_api_key(credential):
            return await self._authenticate_api_key(db, credential)
        claims = self._tokens.decode(credential)
        await set_rls_user(db, claims.user_id)
        if await db.get(User, claims.user_id) is None:
            raise Unauthenticated("Invalid or expired credentials")
        return Caller(user_id=claims.user_id, via="token")

    async def _authenticate_api_key(self, db: AsyncSession, secret: str) -> Caller:
        key_hash = hash_api_key(secret)
        await set_rls_api_key(db, key_hash)
        key = (
            await db.execute(
                select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
            )
        ).scalar_one_or_none()
        if key is None:
            raise Unauthenticated("Invalid or revoked API key")
        await set_rls_user(db, key.user_id)
        now = datetime.now(UTC)
        if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_RESOLUTION:
            await db.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        return Caller(user_id=key.user_id, via="api_key")

    async def me(self, db: AsyncSession, caller: Caller) -> User:
        user = await db.get(User, caller.user_id)
        if user is None:
            raise Unauthenticated()
        return user

    async def create_api_key(
        self, db: AsyncSession, caller: Caller, name: str
    ) -> tuple[ApiKey, str]:
        name = name.strip()
        if not 1 <= len(name) <= MAX_API_KEY_NAME:
            raise BadUserInput(f"API key name must be 1 to {MAX_API_KEY_NAME} characters")
        if "\x00" in name:  # PostgreSQL cannot store it: refused the same way on SQLite
            raise BadUserInput("API key name must not contain NUL characters")
        active = await db.scalar(
            select(func.count()).where(
                ApiKey.user_id == caller.user_id, ApiKey.revoked_at.is_(None)
            )
        )
        if (active or 0) >= MAX_API_KEYS_PER_USER:
            raise BadUserInput(f"At most {MAX_API_KEYS_PER_USER} active API keys per account")
        secret = new_api_key_secret()
        key = ApiKey(
            user_id=caller.user_id,
            name=name,
            prefix=api_key_prefix(secret),
            key_hash=hash_api_key(secret),
            created_at=datetime.now(UTC),
        )
        db.add(key)
        await db.flush()
        return key, secret

    async def list_api_keys(self, db: AsyncSession, caller: Caller) -> list[ApiKey]:
        """Active keys first, then the most recently revoked, newest first; at most
        MAX_API_KEYS_LISTED (revoked keys pile up without bound, active ones cannot)."""
        result = await db.execute(
            select(ApiKey)
            .where(ApiKey.user_id == caller.user_id)
            .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc())
            .limit(MAX_API_KEYS_LISTED)
        )
        return list(result.scalars())

    async def revoke_api_key(self, db: AsyncSession, caller: Caller, key_id: uuid.UUID) -> None:
        revoked = await db.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                ApiKey.user_id == caller.user_id,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=datetime.now(UTC))
            .returning(ApiKey.id)
        )
        if revoked.first() is None:
            raise NotFound("API key not found")
