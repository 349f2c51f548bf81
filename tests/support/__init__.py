"""Helpers the tests share: API calls over HTTP and websockets, made the way a client makes them."""
