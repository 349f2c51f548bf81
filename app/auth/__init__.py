"""Accounts, passwords, access tokens, API keys, and finding out who is calling."""
