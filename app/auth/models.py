from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, new_id, utcnow

# Accounts that log in with a password: their emails are unique (accounts of an external issuer
# carry the issuer's email claim for display only; see app/auth/service.py).
_HAS_PASSWORD = text("password_hash IS NOT NULL")


class User(Base):
    """An account: a password account (email + password), an external issuer's user
    (identity_issuer + identity_subject, no password), or a password account linked to one."""

    __tablename__ = "users"
    __table_args__ = (
        # Emails are stored NFKC case-folded by the service (app/auth/emails.py).
        Index(
            "uq_users_email",
            "email",
            unique=True,
            postgresql_where=_HAS_PASSWORD,
            sqlite_where=_HAS_PASSWORD,
        ),
        Index("uq_users_identity", "identity_issuer", "identity_subject", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    identity_issuer: Mapped[str | None] = mapped_column(String(512))
    identity_subject: Mapped[str | None] = mapped_column(String(255))
    # Set by migration 0010 on accounts whose email collided with another's, or was not an
    # acceptable address, once normalised: "collision" or "invalid" (docs/security.md).
    email_review: Mapped[str | None] = mapped_column(String(16))


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
