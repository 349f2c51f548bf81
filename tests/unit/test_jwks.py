"""The JWKS cache against a real loopback issuer, with a clock the test moves.

What it must do (app/auth/jwks.py): keep keys as long as the issuer's Cache-Control says (within
bounds), refresh for an unknown `kid` at most once per interval whatever the kids sprayed, share
one fetch between concurrent callers, bound the wait, keep the last keys when the issuer fails,
and drop what must never verify a token (symmetric and private keys).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.auth.jwks import JwksCache, cache_seconds, parse_jwks
from tests.fakes.identity_issuer import FakeIssuer, SigningKey

INTERVAL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with FakeIssuer(cache_control="public, max-age=600") as fake:
        yield fake


def cache_of(issuer: FakeIssuer, clock: Clock, *, timeout: float = 2.0) -> JwksCache:
    return JwksCache(issuer.jwks_url, timeout=timeout, min_refresh=INTERVAL, clock=clock)


async def test_keys_are_cached_for_the_responses_max_age(issuer: FakeIssuer) -> None:
    clock = Clock()
    cache = cache_of(issuer, clock)
    first = issuer.signing
    assert (await cache.key(first.kid)) is not None
    assert issuer.jwks_requests == 1
    clock.now += 599
    assert (await cache.key(first.kid)) is not None
    assert issuer.jwks_requests == 1  # still fresh: max-age=600
    issuer.retire(first)
    issuer.rotate("EC")
    clock.now += 2  # expired: the next lookup refreshes, and the retired key is gone
    assert (await cache.key(first.kid)) is None
    assert issuer.jwks_requests == 2
    assert (await cache.key(issuer.signing.kid)) is not None
    assert issuer.jwks_requests == 2


async def test_a_spray_of_unknown_kids_fetches_once_per_interval(issuer: FakeIssuer) -> None:
    clock = Clock()
    cache = cache_of(issuer, clock)
    assert (await cache.key(issuer.signing.kid)) is not None  # the first load
    for number in range(200):
        assert (await cache.key(f"made-up-{number}")) is None
    assert issuer.jwks_requests == 2  # the load, then one refresh for an unknown kid

    rotated = issuer.rotate("Ed25519")
    clock.now += INTERVAL - 1
    assert (await cache.key(rotated.kid)) is None  # not yet: the interval has not passed
    assert issuer.jwks_requests == 2
    clock.now += 1
    assert (await cache.key(rotated.kid)) is not None  # a real rotation is picked up
    assert issuer.jwks_requests == 3


async def test_concurrent_lookups_share_one_fetch(issuer: FakeIssuer) -> None:
    cache = cache_of(issuer, Clock())
    issuer.mode = "hang"
    lookups = [asyncio.create_task(cache.key(issuer.signing.kid)) for _ in range(50)]
    await asyncio.wait_for(issuer.held.wait(), timeout=5)
    issuer.reset()  # answer the held request
    found = await asyncio.gather(*lookups)
    assert all(key is not None for key in found)
    assert issuer.jwks_requests == 1


async def test_a_slow_issuer_costs_one_bounded_wait_then_nothing_until_the_interval(
    issuer: FakeIssuer,
) -> None:
    clock = Clock()
    cache = cache_of(issuer, clock, timeout=0.2)
    issuer.mode = "hang"
    assert (await asyncio.wait_for(cache.key(issuer.signing.kid), timeout=5)) is None
    assert issuer.jwks_requests == 1
    assert (await cache.key(issuer.signing.kid)) is None  # failed just now: not asked again
    assert issuer.jwks_requests == 1
    issuer.reset()
    clock.now += INTERVAL
    assert (await cache.key(issuer.signing.kid)) is not None
    assert issuer.jwks_requests == 2


async def test_when_the_issuer_fails_the_last_keys_stay_in_use(issuer: FakeIssuer) -> None:
    clock = Clock()
    cache = cache_of(issuer, clock)
    kid = issuer.signing.kid
    assert (await cache.key(kid)) is not None
    issuer.mode = "error"
    clock.now += 601  # expired
    assert (await cache.key(kid)) is not None  # refresh failed: the stale key still verifies
    assert issuer.jwks_requests == 2
    clock.now += 1
    assert (await cache.key(kid)) is not None
    assert issuer.jwks_requests == 2  # and the failing issuer is left alone for an interval


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("public, max-age=600", 600.0),
        ("max-age=0, must-revalidate", 0.0),
        ("no-store", 0.0),
        ("public, s-maxage=10", None),
        (None, None),
        ('max-age="30"', 30.0),
    ],
)
def test_cache_control(header: str | None, seconds: float | None) -> None:
    assert cache_seconds(header) == seconds


async def test_a_no_cache_jwks_is_still_kept_for_the_interval(issuer: FakeIssuer) -> None:
    issuer.cache_control = "no-store"
    clock = Clock()
    cache = cache_of(issuer, clock)
    assert (await cache.key(issuer.signing.kid)) is not None
    clock.now += INTERVAL - 1
    assert (await cache.key(issuer.signing.kid)) is not None
    assert issuer.jwks_requests == 1


def test_only_public_asymmetric_signing_keys_with_a_kid_are_kept() -> None:
    rsa_key, ec_key, ed_key = (SigningKey.generate(kind) for kind in ("RSA", "EC", "Ed25519"))
    private = ec_key.public_jwk() | {"kid": "leaked", "d": "AAAA"}
    document = {
        "keys": [
            rsa_key.public_jwk(),
            ec_key.public_jwk(),
            ed_key.public_jwk(),
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256"},
            rsa_key.public_jwk() | {"kid": "rsa-as-hmac", "alg": "HS256"},
            rsa_key.public_jwk() | {"kid": "encryption", "use": "enc"},
            {key: value for key, value in rsa_key.public_jwk().items() if key != "kid"},
            private,
            ec_key.public_jwk() | {"kid": "odd-curve", "crv": "P-192"},
            "not a key",
        ]
    }
    keys = parse_jwks(document)
    assert sorted(keys) == sorted([rsa_key.kid, ec_key.kid, ed_key.kid])
    assert {key.algorithm_name for key in keys.values()} == {"RS256", "ES256", "EdDSA"}
    with pytest.raises(ValueError, match="JWKS"):
        parse_jwks({"keys": "none"})
