"""Every query on users and API keys.

On PostgreSQL, Row Level Security lets a transaction see only its caller's rows (`app.user_id`),
so the queries that find the caller in the first place first open one narrow window, for this
transaction only: the password account of the email being logged in to, the API key whose hash
was presented, the user of the external identity presented. The functions that need one open it
themselves.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey, User
from app.db import set_rls_api_key, set_rls_login_email, set_rls_user

# Beside app.db's set_rls_* helpers: transaction-local, read by the `users_identity` policy.
_SET_IDENTITY = text(
    "SELECT set_config('app.identity_issuer', :issuer, true), "
    "set_config('app.identity_subject', :subject, true)"
)


async def get_user(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    user: User | None = await db.get(User, user_id)
    return user


async def find_password_account(db: AsyncSession, email: str) -> User | None:
    """The account that logs in with `email` (normalised) and a password."""
    await set_rls_login_email(db, email)
    query = select(User).where(User.email == email, User.password_hash.is_not(None))
    return (await db.execute(query)).scalar_one_or_none()


async def find_by_identity(db: AsyncSession, issuer: str, subject: str) -> User | None:
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(_SET_IDENTITY, {"issuer": issuer, "subject": subject})
    query = select(User).where(User.identity_issuer == issuer, User.identity_subject == subject)
    return (await db.execute(query)).scalar_one_or_none()


async def add_user(db: AsyncSession, user: User) -> None:
    """Insert `user` (its id set), naming it the caller so the insert passes RLS; flushed in a
    savepoint, so a unique violation (a concurrent sign-up) leaves the transaction usable."""
    await set_rls_user(db, user.id)
    async with db.begin_nested():  # added inside: begin_nested() flushes what is pending first
        db.add(user)
        await db.flush()


async def set_password_hash(db: AsyncSession, user_id: uuid.UUID, password_hash: str) -> None:
    await db.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


async def set_identity(db: AsyncSession, user_id: uuid.UUID, issuer: str, subject: str) -> None:
    await db.execute(
        update(User)
        .where(User.id == user_id, User.identity_issuer.is_(None))
        .values(identity_issuer=issuer, identity_subject=subject)
    )


async def set_email(db: AsyncSession, user_id: uuid.UUID, email: str) -> None:
    await db.execute(update(User).where(User.id == user_id).values(email=email))


async def find_active_api_key(db: AsyncSession, key_hash: str) -> ApiKey | None:
    await set_rls_api_key(db, key_hash)
    query = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    return (await db.execute(query)).scalar_one_or_none()


async def touch_api_key(db: AsyncSession, key_id: uuid.UUID, now: datetime) -> None:
    await db.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


async def count_active_api_keys(db: AsyncSession, user_id: uuid.UUID) -> int:
    query = select(func.count()).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    return int(await db.scalar(query) or 0)


async def add_api_key(db: AsyncSession, key: ApiKey) -> None:
    db.add(key)
    await db.flush()


async def list_api_keys(db: AsyncSession, user_id: uuid.UUID, limit: int) -> list[ApiKey]:
    """Active keys first, then the most recently revoked, newest first."""
    result = await db.execute(
        select(ApiKey)
        .where(ApiKey.user_id == user_id)
        .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc())
        .limit(limit)
    )
    return list(result.scalars())


async def revoke_api_key(
    db: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID, now: datetime
) -> bool:
    """Revoke the user's active key `key_id`; False when there is no such key."""
    revoked = await db.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiKey.id)
    )
    return revoked.first() is not None
