from __future__ import annotations

import uuid

import strawberry

from app.errors import BadUserInput


def parse_id(value: strawberry.ID | str, what: str = "id") -> uuid.UUID:
    """A client-supplied ID as a UUID; anything else is the client's mistake, not a 500."""
    try:
        return uuid.UUID(str(value))
    except ValueError as error:
        raise BadUserInput(f"Malformed {what}") from error
