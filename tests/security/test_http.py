"""Hostile HTTP and GraphQL requests against a development server: oversized bodies, costly
query shapes, batching, mutations over GET, form posts, huge pages, and models that are not in
the catalogue. Each is refused whole; "nothing ran" is shown by side effects that did not happen
(no conversation created, no log-in counted, no model request)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User, unique_email
from tests.support.streams import transports

pytestmark = pytest.mark.usefixtures("server_survives")

EMAIL_LIMIT = 5
TWO_MB = 2_000_000
CREATE = 'mutation { createConversation(input: {title: "x"}) { id } }'
COUNT = "{ conversations(first: 100) { edges { node { id title model } } } }"
MULTIPART = '--xyz\r\nContent-Disposition: form-data; name="query"\r\n\r\n%s\r\n--xyz--\r\n'
LOGIN_AS_EMAIL = "mutation ($e: String!) { %s(input: {email: $e, password: $e}) { accessToken } }"


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"login_rate_limit_per_email": f"{EMAIL_LIMIT}/hour"}


@pytest.fixture
async def user(api: Api) -> User:
    return await api.register()


async def conversations(api: Api, user: User) -> list[dict[str, Any]]:
    data = await api.gql(COUNT, user=user)
    return [edge["node"] for edge in data["conversations"]["edges"]]


async def post_graphql(api: Api, body: Any, user: User | None = None) -> httpx.Response:
    return await api.http.post("/graphql", json=body, headers=user.headers if user else {})


def error_messages(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body.get("data") is None, body  # refused before execution: no field resolved
    return [error["message"] for error in body["errors"]]


# --- request size --------------------------------------------------------------------------------


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "request_too_large"
    assert response.headers["connection"] == "close"
    # Refused by the innermost middleware: the other middleware still wrap the answer.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


async def test_bodies_past_the_limit_are_413_and_change_nothing(api: Api, user: User) -> None:
    huge_title = {"title": "x" * TWO_MB}
    rest = await api.http.post("/api/v1/conversations", json=huge_title, headers=user.headers)
    assert_too_large(rest)
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": "p" * TWO_MB}
    )
    assert_too_large(login)
    graphql = await post_graphql(
        api, {"query": CREATE.replace('"x"', '"' + "x" * TWO_MB + '"')}, user
    )
    assert_too_large(graphql)
    assert await conversations(api, user) == []


async def test_a_chunked_body_is_counted_as_it_arrives(
    api: Api, server: LiveServer, user: User
) -> None:
    limit = server.settings.max_request_body_bytes

    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            size = min(64 * 1024, total - sent)
            sent += size
            yield b" " * size

    # No Content-Length: the server can only count. One byte too many is refused...
    over = await api.http.post(
        "/api/v1/conversations",
        content=chunks(limit + 1),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_too_large(over)
    # ...and the limit itself is read through to the app (which finds no JSON in it).
    at_limit = await api.http.post(
        "/graphql",
        content=chunks(limit),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert at_limit.status_code == 400, at_limit.text


# --- query shape ---------------------------------------------------------------------------------


async def test_a_depth_20_query_is_refused_without_running(api: Api, user: User) -> None:
    deep = "leaf"
    for level in range(14):
        deep = f"f{level} {{ {deep} }}"
    # Six real levels, fourteen more below them: 20 in all.
    query = (
        'mutation { createConversation(input: {title: "deep"}) '
        f"{{ messages {{ edges {{ node {{ {deep} }} }} }} }} }}"
    )
    messages = error_messages(await post_graphql(api, {"query": query}, user))
    assert any("exceeds maximum operation depth of 10" in m for m in messages), messages
    assert await conversations(api, user) == []

    # Introspection fields do not count towards that depth, but its cycles are bounded too.
    cyclic = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    assert error_messages(await post_graphql(api, {"query": cyclic})) == [
        "Maximum introspection depth exceeded"
    ]


async def test_101_aliases_are_refused_without_running(api: Api, user: User) -> None:
    aliased = " ".join(f"a{n}: createConversation {{ id }}" for n in range(101))
    query = f"mutation {{ {aliased} }}"
    messages = error_messages(await post_graphql(api, {"query": query}, user))
    assert messages == ["101 aliases found. Allowed: 30"]
    assert await conversations(api, user) == []


async def test_a_2000_token_query_is_refused_without_running(api: Api, user: User) -> None:
    padding = " ".join(["__typename"] * 1990)
    query = f'mutation {{ createConversation(input: {{title: "t"}}) {{ id {padding} }} }}'
    messages = error_messages(await post_graphql(api, {"query": query}, user))
    assert len(messages) == 1
    assert "more than 1000 tokens" in messages[0]
    assert await conversations(api, user) == []


@pytest.mark.parametrize(
    "query",
    [
        "{ conversations(first: 10000) { edges { cursor } } }",
        "{ conversations(first: -1) { edges { cursor } } }",
        "{ conversations { edges { node { messages(first: 10000) { edges { cursor } } } } } }",
    ],
    ids=["conversations-10000", "conversations-negative", "nested-messages-10000"],
)
async def test_page_sizes_are_capped(api: Api, user: User, query: str) -> None:
    await api.create_conversation(user)
    error = await api.gql_error(query, user=user)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "between 1 and 100" in error["message"]


async def test_rest_page_sizes_are_capped(api: Api, user: User) -> None:
    response = await api.http.get(
        "/api/v1/conversations", params={"limit": 10000}, headers=user.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- how operations arrive -----------------------------------------------------------------------


async def test_a_batch_of_100_logins_is_refused_and_none_runs(api: Api, user: User) -> None:
    login = {"query": LOGIN_AS_EMAIL % "login", "variables": {"e": user.email}}
    response = await post_graphql(api, [login] * 100)
    assert response.status_code == 400
    assert "Batching is not enabled" in response.text
    # Had more than EMAIL_LIMIT of them run, this email's log-ins would now be rate limited.
    after = await api.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert after.status_code == 200, after.text

    emails = [unique_email("batched") for _ in range(100)]
    sign_ups = [{"query": LOGIN_AS_EMAIL % "register", "variables": {"e": e}} for e in emails]
    assert (await post_graphql(api, sign_ups)).status_code == 400
    assert (await api.register(email=emails[0])).email == emails[0]  # the email was still free


async def test_a_mutation_over_get_is_refused(api: Api, user: User) -> None:
    response = await api.http.get("/graphql", params={"query": CREATE}, headers=user.headers)
    assert response.status_code == 400
    assert "mutations are not allowed when using GET" in response.text
    assert await conversations(api, user) == []
    # GET stays available for queries.
    query = await api.http.get("/graphql", params={"query": "{ me { id } }"}, headers=user.headers)
    assert query.json() == {"data": {"me": {"id": user.id}}}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"query": "%s"}'),
        ("application/x-www-form-urlencoded", "query=%s"),
        ("multipart/form-data; boundary=xyz", MULTIPART),
        ("", '{"query": "%s"}'),
    ],
    ids=["text-plain", "form-urlencoded", "multipart", "no-content-type"],
)
async def test_non_json_posts_are_refused(
    api: Api, user: User, content_type: str, body: str
) -> None:
    # The content types a cross-site form can send without a CORS preflight.
    mutation = CREATE.replace('"', '\\"') if content_type in ("text/plain", "") else CREATE
    response = await api.http.post(
        "/graphql",
        content=(body % mutation).encode(),
        headers={**user.headers, "Content-Type": content_type},
    )
    assert response.status_code == 400, response.text
    assert await conversations(api, user) == []


# --- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4-unknown",
        "https://attacker.example/v1/chat/completions",
        "http://169.254.169.254/latest/meta-data",
        "../../openai/v1/models",
        "llama-3.1-8b-instant@attacker.example",
        "llama-3.1-8b-instant" + "x" * 10_000,
    ],
    ids=["unknown", "url", "metadata-url", "path", "suffixed", "huge"],
)
async def test_models_outside_the_catalogue_are_bad_input(
    api: Api, user: User, fake_groq: FakeGroq, model: str
) -> None:
    calls = len(fake_groq.requests)
    create = await api.gql_error(
        "mutation ($m: String!) { createConversation(input: {model: $m}) { id } }",
        {"m": model},
        user=user,
    )
    assert create["extensions"]["code"] == "BAD_USER_INPUT"
    assert model not in create["message"]  # the client's text is not echoed back
    rest = await api.http.post("/api/v1/conversations", json={"model": model}, headers=user.headers)
    assert rest.status_code == 422, rest.text

    existing = await api.create_conversation(user)
    update = await api.gql_error(
        "mutation ($id: ID!, $m: String!) "
        "{ updateConversation(id: $id, input: {model: $m}) { id } }",
        {"id": existing["id"], "m": model},
        user=user,
    )
    assert update["extensions"]["code"] == "BAD_USER_INPUT"
    assert [c["model"] for c in await conversations(api, user)] == [existing["model"]]
    assert len(fake_groq.requests) == calls


# --- headers -------------------------------------------------------------------------------------


async def test_api_headers_and_no_cors_for_unlisted_origins(api: Api, user: User) -> None:
    response = await api.http.get("/api/v1/conversations", headers=user.headers)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers  # development: plain HTTP
    preflight = await api.http.options(
        "/graphql",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_a_failing_field_cancels_its_siblings_cleanly(api: Api, user: User) -> None:
    # Found by the fuzzer: `messages` fails while `usage` is mid-query; graphql-core cancels
    # `usage`, its driver closes the connection, and the rollback used to fail with the driver's
    # own message (no code) in the answer.
    query = (
        "mutation { createConversation { id messages(first: 101) { edges { cursor } } "
        "usage { outputTokens } } }"
    )
    for _ in range(3):
        response = await post_graphql(api, {"query": query}, user)
        assert response.json() == {
            "data": None,
            "errors": [
                {
                    "message": "Page size must be between 1 and 100",
                    "locations": [{"line": 1, "column": 36}],
                    "path": ["createConversation", "messages"],
                    "extensions": {"code": "BAD_USER_INPUT"},
                }
            ],
        }
    assert await conversations(api, user) == []  # the failed mutation was rolled back


async def test_text_the_database_cannot_store_is_refused_or_replaced(
    api: Api, fake_groq: FakeGroq
) -> None:
    user = await api.register()
    conversation_id = str((await api.create_conversation(user))["id"])
    sse = transports(api.http, api.ws_url)["sse"]
    # From the client: refused before anything is stored (PostgreSQL cannot store NUL).
    refused = await sse.stream(user, conversation_id, "hello\x00world")
    assert refused.error is not None
    assert refused.error["status"] == 422, refused.error
    title = await api.http.post(
        "/api/v1/conversations", json={"title": "a\x00b"}, headers=user.headers
    )
    assert title.status_code == 422, title.text
    for mutation, variables in (
        ("mutation ($n: String!) { createApiKey(name: $n) { secret } }", {"n": "ci\x00"}),
        (
            "mutation ($e: String!) { register(input: {email: $e, password: $e}) { expiresIn } }",
            {"e": "a\x00b@example.test"},
        ),
    ):
        error = await api.gql_error(mutation, variables, user=user)
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    # From the model: replaced, identically in the stream and in the stored reply.
    fake_groq.enqueue(Scenario(tokens=["a\x00", "b"]))
    result = await sse.stream(user, conversation_id, "say it")
    assert result.error is None, result.error
    assert result.text == "a\ufffdb"
    messages = await api.http.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=user.headers
    )
    assert [m["content"] for m in messages.json()["data"]] == ["say it", "a\ufffdb"]


@pytest.mark.parametrize(
    ("mutation", "variables"),
    [
        ("createConversation(input: {title: $v})", {"v": "t" * 201}),
        ("createConversation(input: {systemPrompt: $v})", {"v": "s" * 32_001}),
        ("createApiKey(name: $v)", {"v": "k" * 101}),
    ],
    ids=["title", "system-prompt", "api-key-name"],
)
async def test_text_fields_past_their_limits_are_bad_input(
    api: Api, user: User, mutation: str, variables: dict[str, Any]
) -> None:
    field = mutation.split("(")[0]
    selection = "{ secret }" if field == "createApiKey" else "{ id }"
    error = await api.gql_error(
        f"mutation ($v: String!) {{ {mutation} {selection} }}", variables, user=user
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert await conversations(api, user) == []


@pytest.mark.parametrize(
    ("max_tokens", "temperature"),
    [(0, None), (10**9, None), (None, -0.1), (None, 2.5)],
    ids=["max-tokens-zero", "max-tokens-huge", "temperature-negative", "temperature-high"],
)
async def test_generation_parameters_out_of_range_are_refused_before_anything_is_stored(
    api: Api, user: User, fake_groq: FakeGroq, max_tokens: int | None, temperature: float | None
) -> None:
    conversation_id = str((await api.create_conversation(user))["id"])
    calls = len(fake_groq.requests)
    for name in ("sse", "graphql-transport-ws"):
        result = await transports(api.http, api.ws_url)[name].stream(
            user, conversation_id, "hi", max_tokens=max_tokens, temperature=temperature
        )
        assert result.error is not None, name
        assert result.events == []
        if name == "sse":
            assert result.error["status"] == 422, result.error
        else:
            assert result.error["code"] == "BAD_USER_INPUT", result.error
    assert len(fake_groq.requests) == calls
    messages = await api.http.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=user.headers
    )
    assert messages.json()["data"] == []
