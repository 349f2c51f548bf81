"""Conversations and their messages: storage, ownership, pagination."""
