"""Accounts: sign-up, log-in, API keys, and turning a bearer credential into a caller.

Every function here runs inside the caller's unit of work (a session in a transaction) and never
commits. `authenticate` also names the caller for Row Level Security, so it must run before any
query on user data in that transaction.

Three kinds of credential reach `authenticate`, on every transport: our own access tokens, API
keys, and access tokens of the configured external issuer (`app.auth.external`). A token goes to
the verifier of the issuer it names; ours is the default, so a token naming no issuer we accept
is checked (and refused) by our own verifier. An external user is a local `User` keyed by the
token's `(iss, sub)`, created on first sight (see `_external_user`); from then on it owns
conversations, spends budgets and is rate limited exactly like a password account.

Managing API keys (creating, listing, revoking) needs an interactive log-in, an access token,
never an API key: a leaked key cannot mint keys that outlive its revocation, nor revoke the
owner's other keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.emails import normalize_email
from app.auth.external import ExternalIdentity, ExternalIssuer
from app.auth.models import ApiKey, User
from app.auth.security import (
    INVALID_TOKEN,
    PasswordHasher,
    TokenCodec,
    api_key_prefix,
    check_password_length,
    hash_api_key,
    is_api_key,
    load_signing_secret,
    new_api_key_secret,
    unverified_issuer,
)
from app.config import Settings
from app.db import new_id, set_rls_user
from app.errors import BadUserInput, Conflict, Forbidden, NotFound, Unauthenticated
from app.ratelimit.service import Limits

MAX_API_KEY_NAME = 100
MAX_API_KEYS_PER_USER = 50
MAX_API_KEYS_LISTED = 100
_BAD_LOGIN = "Invalid email or password"
_EXISTS = "An account with this email already exists"
_INTERACTIVE_ONLY = "Managing API keys needs an access token from a log-in, not an API key"
# Writing last_used_at on every request would turn each read into a write; a minute is precise
# enough to tell a live key from a forgotten one.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: uuid.UUID
    # "token": an access token, ours or the external issuer's (an interactive log-in).
    via: Literal["token", "api_key"]


@dataclass(frozen=True, slots=True)
class Session:
    """What register and login return: the user and a fresh access token."""

    user: User
    access_token: str
    expires_in: int


def parse_bearer(header: str | None) -> str | None:
    """The credential in an `Authorization: Bearer <credential>` header, if there is one."""
    if not header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class Accounts:
    def __init__(
        self,
        hasher: PasswordHasher,
        tokens: TokenCodec,
        limits: Limits,
        *,
        external: ExternalIssuer | None = None,
        link_verified_email: bool = False,
    ) -> None:
        self._hasher = hasher
        self._tokens = tokens
        self._limits = limits
        self._external = external
        self._link_verified_email = link_verified_email

    @classmethod
    def from_settings(cls, settings: Settings, limits: Limits) -> Accounts:
        return cls(
            PasswordHasher(settings.bcrypt_rounds),
            TokenCodec(
                load_signing_secret(settings),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                lifetime=timedelta(minutes=settings.access_token_expire_minutes),
            ),
            limits,
            external=ExternalIssuer.from_settings(settings),
            link_verified_email=settings.auth_link_verified_email,
        )

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
        if await repository.find_password_account(db, normalized) is not None:
            raise Conflict(_EXISTS)
        user = User(id=new_id(), email=normalized, password_hash=await self._hasher.hash(encoded))
        try:
            await repository.add_user(db, user)
        except IntegrityError as error:  # a concurrent sign-up with the same email won the race
            raise Conflict(_EXISTS) from error
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
        # Accounts of an external issuer have no password: for log-in they do not exist.
        user = await repository.find_password_account(db, normalized) if normalized else None
        # Unknown emails and accounts hashed at an old cost pay for the same bcrypt work as any
        # other, so timing reveals neither (see PasswordHasher).
        if not await self._hasher.verify(encoded, user.password_hash if user else None):
            raise Unauthenticated(_BAD_LOGIN)
        assert user is not None
        assert user.password_hash is not None
        await set_rls_user(db, user.id)
        if self._hasher.needs_rehash(user.password_hash):  # BCRYPT_ROUNDS changed since
            await repository.set_password_hash(db, user.id, await self._hasher.hash(encoded))
        return self._session_for(user)

    async def authenticate(self, db: AsyncSession, credential: str | None) -> Caller:
        """The caller behind a bearer credential (access token or API key), or Unauthenticated."""
        if not credential:
            raise Unauthenticated()
        if is_api_key(credential):
            return await self._authenticate_api_key(db, credential)
        external = self._external
        if external is not None and unverified_issuer(credential) == external.issuer:
            user = await self._external_user(db, await external.verify(credential))
            return Caller(user_id=user.id, via="token")
        claims = self._tokens.decode(credential)
        await set_rls_user(db, claims.user_id)
        if await repository.get_user(db, claims.user_id) is None:
            raise Unauthenticated(INVALID_TOKEN)
        return Caller(user_id=claims.user_id, via="token")

    async def _external_user(self, db: AsyncSession, identity: ExternalIdentity) -> User:
        """The local user of an external identity, created (or linked) on first sight.

        Keyed by `(iss, sub)`, never by email: an email claim says nothing about who controls
        the address. With AUTH_LINK_VERIFIED_EMAIL the first sight of an identity whose issuer
        says its email is verified adopts the password account of that email, if it is not
        linked yet; otherwise a new user is created, even when a password account has the email.
        """
        user = await repository.find_by_identity(db, identity.issuer, identity.subject)
        if user is not None:
            await set_rls_user(db, user.id)
            if user.password_hash is None and identity.email and identity.email != user.email:
                # The issuer's current address, for display (only password accounts log in by
                # email, so this one may change freely).
                await repository.set_email(db, user.id, identity.email)
            return user
        if self._link_verified_email and identity.email_verified and identity.email:
            local = await repository.find_password_account(db, identity.email)
            if local is not None and local.identity_issuer is None:
                await set_rls_user(db, local.id)
                await repository.set_identity(db, local.id, identity.issuer, identity.subject)
                return local
        user = User(
            id=new_id(),
            email=identity.email or "",
            password_hash=None,
            identity_issuer=identity.issuer,
            identity_subject=identity.subject,
        )
        try:
            await repository.add_user(db, user)
        except IntegrityError:
            # The same identity's first requests raced; the one that won is the user.
            found = await repository.find_by_identity(db, identity.issuer, identity.subject)
            if found is None:
                raise
            user = found
        await set_rls_user(db, user.id)
        return user

    async def _authenticate_api_key(self, db: AsyncSession, secret: str) -> Caller:
        key = await repository.find_active_api_key(db, hash_api_key(secret))
        if key is None:
            raise Unauthenticated("Invalid or revoked API key")
        await set_rls_user(db, key.user_id)
        now = datetime.now(UTC)
        if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_RESOLUTION:
            await repository.touch_api_key(db, key.id, now)
        return Caller(user_id=key.user_id, via="api_key")

    async def me(self, db: AsyncSession, caller: Caller) -> User:
        user = await repository.get_user(db, caller.user_id)
        if user is None:
            raise Unauthenticated()
        return user

    async def create_api_key(
        self, db: AsyncSession, caller: Caller, name: str
    ) -> tuple[ApiKey, str]:
        _require_interactive(caller)
        await self._limits.check_write(caller.user_id)
        name = name.strip()
        if not 1 <= len(name) <= MAX_API_KEY_NAME:
            raise BadUserInput(f"API key name must be 1 to {MAX_API_KEY_NAME} characters")
        if "\x00" in name:  # PostgreSQL cannot store it: refused the same way on SQLite
            raise BadUserInput("API key name must not contain NUL characters")
        if await repository.count_active_api_keys(db, caller.user_id) >= MAX_API_KEYS_PER_USER:
            raise BadUserInput(f"At most {MAX_API_KEYS_PER_USER} active API keys per account")
        secret = new_api_key_secret()
        key = ApiKey(
            user_id=caller.user_id,
            name=name,
            prefix=api_key_prefix(secret),
            key_hash=hash_api_key(secret),
            created_at=datetime.now(UTC),
        )
        await repository.add_api_key(db, key)
        return key, secret

    async def list_api_keys(self, db: AsyncSession, caller: Caller) -> list[ApiKey]:
        """Active keys first, then the most recently revoked, newest first; at most
        MAX_API_KEYS_LISTED (revoked keys pile up without bound, active ones cannot)."""
        _require_interactive(caller)
        return await repository.list_api_keys(db, caller.user_id, MAX_API_KEYS_LISTED)

    async def revoke_api_key(self, db: AsyncSession, caller: Caller, key_id: uuid.UUID) -> None:
        # Not rate limited: revoking a leaked key must never have to wait.
        _require_interactive(caller)
        if not await repository.revoke_api_key(db, caller.user_id, key_id, datetime.now(UTC)):
            raise NotFound("API key not found")


def _require_interactive(caller: Caller) -> None:
    if caller.via != "token":
        raise Forbidden(_INTERACTIVE_ONLY)
