"""Conversation API: accounts, conversations and streamed model replies over GraphQL and SSE."""
