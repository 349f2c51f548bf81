"""Loopback fakes of the services the API depends on (only the model provider is ever faked)."""
