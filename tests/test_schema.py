"""schema.graphql is generated from the code (`make schema`) and must never drift from it."""

from __future__ import annotations

from pathlib import Path

from app.graphql.schema import sdl_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_schema_file_matches_the_code() -> None:
    current = sdl_schema.as_str().strip()
    committed = SCHEMA_FILE.read_text(encoding="utf-8").strip()
    assert committed == current, "schema.graphql is stale: run `make schema` and commit it"


def test_contract_names_are_present() -> None:
    sdl = sdl_schema.as_str()
    for name in (
        "enum Role",
        "type Conversation",
        "type MessageConnection",
        "type UsageSummary",
        "type ApiKeyCreated",
        "input CreateConversationInput",
        "conversations(first: Int = 20, after: String = null): ConversationConnection!",
        "type MessageStartEvent implements StreamEvent",
        "streamMessage(conversationId: ID!, content: String!, maxTokens: Int = null, "
        "temperature: Float = null): StreamEvent!",
    ):
        assert name in sdl, name
