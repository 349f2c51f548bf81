"""Opaque keyset cursors: a position `(timestamp, id)` in an ordered list, never an offset.

A cursor says "after this row". Rows inserted elsewhere never shift it, so pages have neither
duplicates nor gaps among rows that did not move. (A row whose sort key changes between two page
requests moves: with "most recently updated first", an updated row jumps to the front and is seen
on the next refresh of the first page, not again further down.)
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import BadUserInput

MAX_CURSOR_LENGTH = 128
_MALFORMED = "Malformed cursor"


@dataclass(frozen=True, slots=True)
class Position:
    at: datetime
    id: uuid.UUID


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    if at.tzinfo is None:
        raise ValueError("cursor timestamps must be timezone-aware")
    # Whole seconds plus the microsecond field: exact, where a float timestamp would round.
    seconds = int(at.astimezone(UTC).replace(microsecond=0).timestamp())
    raw = f"{seconds * 1_000_000 + at.microsecond}:{row_id.hex}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Position:
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise BadUserInput(_MALFORMED)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
        micros_text, _, hex_id = raw.partition(":")
        micros = int(micros_text)
        seconds, micro = divmod(micros, 1_000_000)
        at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micro)
        return Position(at=at, id=uuid.UUID(hex=hex_id))
    except (ValueError, UnicodeError, binascii.Error, OverflowError, OSError) as error:
        raise BadUserInput(_MALFORMED) from error
