"""Prompt assembly: system prompt, then history oldest to newest, then the new user message.

When the prompt would not fit the model's context window minus the reply's `max_tokens`, the
oldest turns go first. The system prompt and the new message are never dropped; a new message
that cannot fit even alone is the client's error, raised before anything is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import BadUserInput
from app.llm.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_PROMPT


@dataclass(frozen=True, slots=True)
class Turn:
    id: uuid.UUID
    role: str
    tokens: int


@dataclass(frozen=True, slots=True)
class PromptPlan:
    kept: list[uuid.UUID]  # history to send, oldest first
    dropped: int
    input_tokens: int  # estimated size of the whole prompt


def plan_prompt(
    *,
    system_tokens: int | None,
    new_message_tokens: int,
    history_newest_first: Sequence[Turn],
    context_window: int,
    max_tokens: int,
) -> PromptPlan:
    budget = context_window - max_tokens
    required = TOKENS_PER_PROMPT + new_message_tokens + TOKENS_PER_MESSAGE
    if system_tokens is not None:
        required += system_tokens + TOKENS_PER_MESSAGE
    if required > budget:
        raise BadUserInput(
            f"The message does not fit the model's context window ({context_window} tokens) "
            f"with max_tokens={max_tokens}: shorten it or lower max_tokens"
        )
    used = required
    kept: list[Turn] = []
    for turn in history_newest_first:
        cost = turn.tokens + TOKENS_PER_MESSAGE
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    dropped = len(history_newest_first) - len(kept)
    # After trimming, do not open the history with a reply whose question was dropped.
    while dropped and kept and kept[0].role == "assistant":
        used -= kept.pop(0).tokens + TOKENS_PER_MESSAGE
        dropped += 1
    return PromptPlan(kept=[turn.id for turn in kept], dropped=dropped, input_tokens=used)
