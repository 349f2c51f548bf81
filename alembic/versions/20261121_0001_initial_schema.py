"""Initial schema: users, api_keys, conversations, messages; Row Level Security on PostgreSQL.

On PostgreSQL every user-data table has Row Level Security enabled and forced, with policies on
`app.user_id`, a transaction-local setting each unit of work sets to its caller. Two narrow
read-only policies let authentication find a row before the caller is known: a user by the email
being logged in (`app.login_email`) and an API key by the hash of the secret presented
(`app.api_key_hash`).

The application connects as a separate role (DATABASE_APP_ROLE, default `conversation_app`) that is
not a superuser, has no BYPASSRLS and owns nothing. This migration creates it when the migrating
role may create roles, and grants it what it needs either way.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
CALLER = "NULLIF(current_setting('app.user_id', true), '')::uuid"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_user_id_created_at", "api_keys", ["user_id", "created_at"])

    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_conversations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("id", "user_id", name=op.f("uq_conversations_id_user_id")),
    )
    op.create_index(
        "ix_conversations_user_id_updated_at_id", "conversations", ["user_id", "updated_at", "id"]
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "role IN ('user', 'assistant', 'system')", name=op.f("ck_messages_role")
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.id", "conversations.user_id"],
            name="fk_messages_conversation_id_user_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_messages_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_conversation_id_created_at_id",
        "messages",
        ["conversation_id", "created_at", "id"],
    )
    op.create_index("ix_messages_user_id_created_at", "messages", ["user_id", "created_at"])
    in_progress = sa.text("role = 'assistant' AND finish_reason IS NULL")
    op.create_index(
        "uq_messages_one_reply_in_progress",
        "messages",
        ["conversation_id"],
        unique=True,
        postgresql_where=in_progress,
        sqlite_where=in_progress,
    )

    if op.get_bind().dialect.name == "postgresql":
        _enable_row_level_security()
        _grant_app_role(_app_role())


def _enable_row_level_security() -> None:
    for table in ("users", "api_keys", "conversations", "messages"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    for table in ("api_keys", "conversations", "messages"):
        op.execute(
            f"CREATE POLICY {table}_owner ON {table} "
            f"USING (user_id = {CALLER}) WITH CHECK (user_id = {CALLER})"
        )
    op.execute(f"CREATE POLICY users_self ON users USING (id = {CALLER}) WITH CHECK (id = {CALLER})")
    op.execute(
        "CREATE POLICY users_login ON users FOR SELECT "
        "USING (lower(email) = NULLIF(current_setting('app.login_email', true), ''))"
    )
    op.execute(
        "CREATE POLICY api_keys_by_secret ON api_keys FOR SELECT "
        "USING (key_hash = NULLIF(current_setting('app.api_key_hash', true), ''))"
    )


def _app_role() -> str:
    role = str(context.config.attributes.get("app_role") or "conversation_app")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"invalid DATABASE_APP_ROLE {role!r}")
    return role


def _grant_app_role(role: str) -> None:
    # Created only when missing and only if the migrating role may create roles; otherwise an
    # operator creates it first (see the README, "Database roles").
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
              CREATE ROLE "{role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            ELSE
              RAISE WARNING 'role "{role}" does not exist and cannot be created here: create it '
                'and re-run the grants (README, "Database roles")';
            END IF;
          END IF;
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO "{role}"', current_database());
            GRANT USAGE ON SCHEMA public TO "{role}";
            GRANT SELECT, INSERT ON users TO "{role}";
            GRANT SELECT, INSERT, UPDATE ON api_keys TO "{role}";
            GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, messages TO "{role}";
          END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    # Dropping the tables drops their policies and grants; the role is cluster-wide and may serve
    # other databases, so it stays.
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("api_keys")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_table("users")
