"""HTTPS_PROXY and NO_PROXY reach every provider's HTTP client, whichever LLM_HTTP_CLIENT is set.

The fake provider serves TLS with a certificate from a test CA (trustme) that the clients trust
through SSL_CERT_FILE, as an operator's private CA would be; the proxy is a loopback forward
proxy that tunnels with CONNECT, as corporate proxies do for https:// targets.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from app.config import HttpClientKind
from app.llm.sdk import ProviderOptions
from tests.fakes.proxy import ForwardProxy
from tests.support.providers import (
    ANTHROPIC,
    API_KEY,
    GROQ,
    OPENAI,
    ProviderCase,
    collect,
    request,
)

CASES = (GROQ, OPENAI, ANTHROPIC)
HTTP_CLIENTS: tuple[HttpClientKind, ...] = ("aiohttp", "httpx")
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest) -> ProviderCase:
    selected: ProviderCase = request.param
    return selected


@pytest.fixture
async def fake_tls(case: ProviderCase, authority: trustme.CA) -> AsyncIterator[str]:
    """The provider's fake over https://; yields its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(HOST).configure_cert(context)
    fake = case.new_fake()
    fake.ssl = context
    async with fake:
        yield fake.base_url


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as server:
        yield server


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
async def test_https_proxy_carries_the_stream(
    case: ProviderCase,
    fake_tls: str,
    proxy: ForwardProxy,
    trusted: None,
    monkeypatch: pytest.MonkeyPatch,
    http_client: HttpClientKind,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    provider = case.build(fake_tls, API_KEY, ProviderOptions(http_client=http_client))
    try:
        outcome = await collect(provider, request(case.model))
    finally:
        await provider.aclose()

    assert outcome.error is None, outcome.error
    assert outcome.text
    assert proxy.tunnels == [fake_tls.removeprefix("https://")]


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
async def test_no_proxy_bypasses_it(
    case: ProviderCase,
    fake_tls: str,
    proxy: ForwardProxy,
    trusted: None,
    monkeypatch: pytest.MonkeyPatch,
    http_client: HttpClientKind,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", HOST)
    provider = case.build(fake_tls, API_KEY, ProviderOptions(http_client=http_client))
    try:
        outcome = await collect(provider, request(case.model))
    finally:
        await provider.aclose()

    assert outcome.error is None, outcome.error
    assert proxy.tunnels == []
