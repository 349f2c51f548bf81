"""An external issuer's signing keys (its JWKS), fetched asynchronously and cached.

- Only public keys of asymmetric algorithms are kept (RSA, EC, Ed25519), each bound to the
  algorithm its JWK names or its type implies; symmetric (`oct`) keys, keys for encryption,
  private keys and keys without a `kid` are dropped, so no shared secret comes from the network.
- The set is kept for the response's `Cache-Control: max-age` (300 s without one), bounded to
  [MIN_REFRESH, 24 h].
- A token naming a `kid` the set does not have (a rotation, or a made-up kid) refreshes it at
  most once per MIN_REFRESH (`AUTH_JWKS_MIN_REFRESH_SECONDS`, default 60 s), and after a failed
  fetch nothing is fetched for MIN_REFRESH: a client spraying random `kid`s costs the issuer one
  request a minute (besides the expiry refreshes), and an issuer that is down one wait a minute.
- Concurrent callers share one fetch, which waits at most `AUTH_JWKS_TIMEOUT_SECONDS` in all
  (connect, response, body). When a fetch fails, the keys fetched last stay in use: an issuer's
  outage does not sign out users whose keys are known.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
import structlog
from jwt import PyJWK, PyJWTError

logger = structlog.get_logger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_TTL_SECONDS = 300.0
MAX_TTL_SECONDS = 24 * 3600.0
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


def cache_seconds(cache_control: str | None) -> float | None:
    """How long a response may be kept per its Cache-Control; None when it does not say."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def parse_jwks(body: Any) -> dict[str, PyJWK]:
    """The usable signing keys of a JWKS document, by `kid`."""
    if not isinstance(body, Mapping) or not isinstance(body.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, PyJWK] = {}
    for entry in body["keys"][:MAX_KEYS]:
        if not isinstance(entry, Mapping):
            continue
        kid, use = entry.get("kid"), entry.get("use", "sig")
        if not isinstance(kid, str) or not kid or use != "sig" or entry.get("kty") == "oct":
            continue
        if "d" in entry:  # a published private key has leaked: anyone can sign with it
            continue
        if "alg" in entry and entry["alg"] not in ASYMMETRIC_ALGORITHMS:
            continue
        try:
            key = PyJWK(dict(entry))
        except (PyJWTError, ValueError, TypeError):
            continue  # an algorithm or curve we do not support: skip it, keep the others
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[kid] = key
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        min_refresh: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._min_refresh = min_refresh
        self._clock = clock
        # Built once: an AsyncClient per fetch (fetches are rare) then costs no certificate load.
        self._tls = ssl.create_default_context()
        self._keys: dict[str, PyJWK] = {}
        self._expires_at = float("-inf")
        self._failed_at: float | None = None
        self._unknown_kid_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> PyJWK | None:
        """The signing key called `kid`, fetching the set first when that is due and allowed."""
        now = self._clock()
        fresh = now < self._expires_at
        known = self._keys.get(kid)
        if known is not None and fresh:
            return known
        if self._fetching is None:
            if not self._may_fetch(now, unknown_kid=fresh):
                return known  # stale, or None
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
            self._fetching.add_done_callback(self._fetched)
        # Shielded: a caller that gives up (its client left) does not cancel the others' fetch.
        await asyncio.shield(self._fetching)
        return self._keys.get(kid)

    def _may_fetch(self, now: float, *, unknown_kid: bool) -> bool:
        """Nothing for MIN_REFRESH after a failure; for a kid that a fresh set does not have
        (a rotation, or a made-up kid), once per MIN_REFRESH."""
        if self._failed_at is not None and now - self._failed_at < self._min_refresh:
            return False
        if unknown_kid:
            if self._unknown_kid_at is not None and now - self._unknown_kid_at < self._min_refresh:
                return False
            self._unknown_kid_at = now
        return True

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._fetching = None
        if not task.cancelled():
            task.exception()  # retrieved: _fetch logs its own failures and never raises

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                keys, ttl = await self._download()
        except (TimeoutError, httpx.HTTPError, ValueError) as error:
            logger.warning(
                "jwks_fetch_failed",
                url=self.url,
                error=type(error).__name__,
                detail=str(error)[:200],
                known_keys=len(self._keys),
            )
            self._failed_at = self._clock()
            return
        self._failed_at = None
        self._keys = keys
        self._expires_at = self._clock() + min(max(ttl, self._min_refresh), MAX_TTL_SECONDS)

    async def _download(self) -> tuple[dict[str, PyJWK], float]:
        async with (
            httpx.AsyncClient(verify=self._tls, timeout=self._timeout) as client,
            client.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"JWKS answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
            ttl = cache_seconds(response.headers.get("cache-control"))
        keys = parse_jwks(orjson.loads(body))
        return keys, DEFAULT_TTL_SECONDS if ttl is None else ttl
