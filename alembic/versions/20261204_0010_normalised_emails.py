"""Emails in one form (NFKC case-folded); lookalike accounts set aside, never merged.

Existing rows are normalised as `app/auth/emails.py` does for new ones (the function is copied
here: a migration must not change when the application does). Where several accounts share one
normalised email, or an email is not an acceptable address once normalised (it contains invisible
characters), the accounts are never merged and none is deleted:

- of the accounts sharing a normalised email, the one already stored in that form keeps it, or
  else the oldest; it logs in as before;
- every other one keeps its email exactly as stored, gets `email_review` = 'collision' (or
  'invalid'), and can no longer log in with a password (no normalised input matches its stored
  email); its data, its API keys and its unexpired tokens are untouched. An operator resolves it
  (docs/security.md, "Email addresses").

Also replaces the case-insensitive unique index with a unique index on the stored form, for
password accounts (accounts of an external issuer, migration 0011, carry an email for display).

Revision ID: 0010
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")

HAS_PASSWORD = sa.text("password_hash IS NOT NULL")
_SHAPE = re.compile(r"^[^@]+@[^@]+\.[^@]+$")
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _invisible(character: str) -> bool:
    point = ord(character)
    if any(low <= point <= high for low, high in _IGNORABLE):
        return True
    return unicodedata.category(character) in _REFUSED_CATEGORIES


def canonical_email(email: str) -> str | None:
    stripped = email.strip()
    if len(stripped) > 4 * 254 or any(map(_invisible, stripped)):
        return None
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", stripped).casefold())
    if not folded or len(folded) > 254 or any(map(_invisible, folded)):
        return None
    return folded if _SHAPE.match(folded) else None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("users", sa.Column("email_review", sa.String(length=16), nullable=True))
    op.drop_index("uq_users_email_lower", table_name="users")
    if postgres:
        # FORCE makes RLS bind the table owner too; the migration must see every row.
        op.execute("ALTER TABLE users NO FORCE ROW LEVEL SECURITY")
    _normalise_existing_emails()
    op.create_index(
        "uq_users_email",
        "users",
        ["email"],
        unique=True,
        postgresql_where=HAS_PASSWORD,
        sqlite_where=HAS_PASSWORD,
    )
    if postgres:
        op.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")
        op.execute("DROP POLICY users_login ON users")
        op.execute(
            "CREATE POLICY users_login ON users FOR SELECT "
            "USING (email = NULLIF(current_setting('app.login_email', true), ''))"
        )


def _normalise_existing_emails() -> None:
    bind = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.Uuid()),
        sa.column("email", sa.String()),
        sa.column("email_review", sa.String()),
        sa.column("created_at", sa.DateTime()),
    )
    rows = bind.execute(
        sa.select(users.c.id, users.c.email).order_by(users.c.created_at, users.c.id)
    ).all()
    groups: dict[str, list[tuple[object, str]]] = {}
    changes: list[dict[str, object]] = []
    for row in rows:
        canonical = canonical_email(row.email)
        if canonical is None:
            changes.append({"row_id": row.id, "new_email": row.email, "review": "invalid"})
        else:
            groups.setdefault(canonical, []).append((row.id, row.email))
    for canonical, members in groups.items():
        # Oldest first; an account already in the stored form is the one that keeps it.
        keeper = next((m for m in members if m[1] == canonical), members[0])
        for member_id, email in members:
            if member_id == keeper[0]:
                if email != canonical:
                    changes.append({"row_id": member_id, "new_email": canonical, "review": None})
            else:
                changes.append({"row_id": member_id, "new_email": email, "review": "collision"})
    if changes:
        bind.execute(
            users.update()
            .where(users.c.id == sa.bindparam("row_id"))
            .values(email=sa.bindparam("new_email"), email_review=sa.bindparam("review")),
            changes,
        )
    set_aside = sum(1 for change in changes if change["review"] is not None)
    if set_aside:
        logger.warning(
            "%d account(s) set aside with users.email_review (collision or invalid email "
            "after normalisation): see docs/security.md, 'Email addresses'",
            set_aside,
        )


def downgrade() -> None:
    # Emails stay in their normalised form: the original spellings are not kept.
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP POLICY users_login ON users")
        op.execute(
            "CREATE POLICY users_login ON users FOR SELECT "
            "USING (lower(email) = NULLIF(current_setting('app.login_email', true), ''))"
        )
    op.drop_index("uq_users_email", table_name="users")
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.drop_column("users", "email_review")
