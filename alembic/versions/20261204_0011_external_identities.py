"""Users of an external identity provider: `(identity_issuer, identity_subject)`, no password.

A user provisioned from an external issuer's access token is keyed by the token's `iss` and
`sub` (unique together) and has no password (`password_hash` NULL), so log-in by password never
finds it. A password account may also carry an identity (linked; see AUTH_LINK_VERIFIED_EMAIL).

On PostgreSQL a narrow read-only policy lets authentication find the user of the identity a
verified token names (`app.identity_issuer`, `app.identity_subject`), and the application role
may update a user's `password_hash` (rehashed at log-in when BCRYPT_ROUNDS changed), its
identity (linking) and its email (an external user's, kept as the issuer says).

SQLite cannot drop a NOT NULL constraint with ALTER TABLE, and rebuilding `users` would cascade
deletes into every table that references it (foreign keys are on, and cannot be turned off
inside the migration's transaction). So the constraint is removed by editing the stored schema,
the procedure SQLite documents for removing NOT NULL constraints ("ALTER TABLE", section
"Making Other Kinds Of Table Schema Changes"); the rows on disk do not change.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_NULL = "password_hash VARCHAR(100) NOT NULL"
_NULLABLE = "password_hash VARCHAR(100)"
# What the application role may change in `users`: rehashing, linking, an external user's email.
_UPDATABLE = "password_hash, email, identity_issuer, identity_subject"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("users", sa.Column("identity_issuer", sa.String(length=512), nullable=True))
    op.add_column("users", sa.Column("identity_subject", sa.String(length=255), nullable=True))
    op.create_index(
        "uq_users_identity", "users", ["identity_issuer", "identity_subject"], unique=True
    )
    if not postgres:
        _edit_sqlite_users_schema(_NOT_NULL, _NULLABLE)
        return
    op.alter_column("users", "password_hash", existing_type=sa.String(length=100), nullable=True)
    op.create_check_constraint(
        "identity_pair", "users", "(identity_issuer IS NULL) = (identity_subject IS NULL)"
    )
    op.create_check_constraint(
        "credential", "users", "password_hash IS NOT NULL OR identity_issuer IS NOT NULL"
    )
    op.execute(
        "CREATE POLICY users_identity ON users FOR SELECT USING ("
        "identity_issuer = NULLIF(current_setting('app.identity_issuer', true), '') AND "
        "identity_subject = NULLIF(current_setting('app.identity_subject', true), ''))"
    )
    _grant(f'GRANT UPDATE ({_UPDATABLE}) ON users TO "{_app_role()}"')


def _edit_sqlite_users_schema(old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'"
    ).scalar_one()
    if sql.count(old) != 1:
        raise RuntimeError(f"users table is not as migration 0010 left it: {old!r} not found")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'users'",
            (sql.replace(old, new),),
        )
        # Other connections reload the schema when its version changes.
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    if bind.exec_driver_sql("PRAGMA integrity_check").scalar_one() != "ok":
        raise RuntimeError("users table failed SQLite's integrity check after the change")


def _app_role() -> str:
    role = str(context.config.attributes.get("app_role") or "conversation_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"invalid DATABASE_APP_ROLE {role!r}")
    return role


def _grant(statement: str) -> None:
    role = _app_role()
    op.execute(
        f"""
        DO $$
        BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            {statement};
          END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    passwordless = op.get_bind().execute(
        sa.text("SELECT count(*) FROM users WHERE password_hash IS NULL")
    )
    if passwordless.scalar_one():
        raise RuntimeError(
            "users of an external identity provider exist (no password): delete them, or keep "
            "this revision"
        )
    if postgres:
        _grant(f'REVOKE UPDATE ({_UPDATABLE}) ON users FROM "{_app_role()}"')
        op.execute("DROP POLICY users_identity ON users")
        op.drop_constraint("credential", "users", type_="check")
        op.drop_constraint("identity_pair", "users", type_="check")
        op.alter_column(
            "users", "password_hash", existing_type=sa.String(length=100), nullable=False
        )
    else:
        _edit_sqlite_users_schema(_NULLABLE + ",", _NOT_NULL + ",")
    op.drop_index("uq_users_identity", table_name="users")
    op.drop_column("users", "identity_subject")
    op.drop_column("users", "identity_issuer")
