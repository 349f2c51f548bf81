"""Prompt trimming: the oldest turns go first; the system prompt and the new message never do."""

from __future__ import annotations

import uuid

import pytest

from app.errors import BadUserInput
from app.llm.tokens import TOKENS_PER_MESSAGE as M
from app.llm.tokens import TOKENS_PER_PROMPT as P
from app.streaming.prompt import Turn, plan_prompt


def turns(*spec: tuple[str, int]) -> list[Turn]:
    """Turns oldest first, as (role, tokens)."""
    return [Turn(uuid.uuid4(), role, tokens) for role, tokens in spec]


def newest_first(history: list[Turn]) -> list[Turn]:
    return list(reversed(history))


def test_everything_fits() -> None:
    history = turns(("user", 10), ("assistant", 20), ("user", 30), ("assistant", 40))
    plan = plan_prompt(
        system_tokens=5,
        new_message_tokens=7,
        history_newest_first=newest_first(history),
        context_window=1000,
        max_tokens=100,
    )
    assert plan.kept == [t.id for t in history]
    assert plan.dropped == 0
    assert plan.input_tokens == P + (5 + M) + (7 + M) + sum(t.tokens + M for t in history)


def test_oldest_turns_are_dropped_first() -> None:
    history = turns(("user", 100), ("assistant", 100), ("user", 100), ("assistant", 100))
    fixed = P + (10 + M) + (10 + M)
    # Room for exactly the two newest turns.
    window = fixed + 2 * (100 + M) + 50
    plan = plan_prompt(
        system_tokens=10,
        new_message_tokens=10,
        history_newest_first=newest_first(history),
        context_window=window,
        max_tokens=50,
    )
    assert plan.kept == [history[2].id, history[3].id]
    assert plan.dropped == 2
    assert plan.input_tokens == fixed + 2 * (100 + M)


def test_history_never_opens_with_an_orphaned_reply() -> None:
    history = turns(("user", 100), ("assistant", 100), ("user", 100), ("assistant", 100))
    fixed = P + (10 + M)
    # Room for three turns: the oldest kept would be an assistant reply without its question.
    window = fixed + 3 * (100 + M) + 1
    plan = plan_prompt(
        system_tokens=None,
        new_message_tokens=10,
        history_newest_first=newest_first(history),
        context_window=window,
        max_tokens=1,
    )
    assert plan.kept == [history[2].id, history[3].id]
    assert plan.dropped == 2


def test_system_prompt_and_new_message_are_never_dropped() -> None:
    history = turns(("user", 500))
    plan = plan_prompt(
        system_tokens=400,
        new_message_tokens=400,
        history_newest_first=newest_first(history),
        context_window=P + 2 * (400 + M) + 10,
        max_tokens=10,
    )
    assert plan.kept == []
    assert plan.dropped == 1


def test_a_message_that_cannot_fit_alone_is_bad_input() -> None:
    with pytest.raises(BadUserInput, match="context window"):
        plan_prompt(
            system_tokens=None,
            new_message_tokens=1000,
            history_newest_first=[],
            context_window=1000,
            max_tokens=10,
        )
    # The system prompt counts against the room too.
    with pytest.raises(BadUserInput):
        plan_prompt(
            system_tokens=600,
            new_message_tokens=300,
            history_newest_first=[],
            context_window=1000,
            max_tokens=100,
        )
