"""Schemathesis against the REST API (its /openapi.json) and the GraphQL endpoint (its schema, by
introspection), with a real user's token and the default abuse limits.

REST: no 5xx; every documented response matches its schema and content type (errors included:
413, 422 and 429 are documented with the error envelope). GraphQL: no 5xx, and every error
carries one of the contract's codes, never INTERNAL_SERVER_ERROR. Generation is deterministic
(`derandomize`) and bounded (EXAMPLES per operation and mode), so the run takes seconds and a
failure reproduces; schemathesis runs in a worker thread because its client is synchronous and
the server shares this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from app.config import Settings
from tests.conftest import LiveServer
from tests.support.api import Api, User

pytestmark = pytest.mark.usefixtures("server_survives")

# Bounded for CI; FUZZ_EXAMPLES=200 digs deeper locally.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
CONTRACT_CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "RATE_LIMITED",
    "QUOTA_EXCEEDED",
    "UPSTREAM_ERROR",
}
_LIMITS = (
    "login_rate_limit_per_ip",
    "login_rate_limit_per_email",
    "register_rate_limit_per_ip",
    "register_rate_limit_per_email",
    "reply_rate_limit_per_user",
)


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    # The production defaults, not the test suite's raised ones: fuzzing hits them, and the 429s
    # must match the documented error body too.
    return {name: Settings.model_fields[name].default for name in _LIMITS}


@pytest.fixture(scope="module")
async def fuzzer(server: LiveServer) -> tuple[User, str]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        api = Api(http, server.ws_url)
        user = await api.register()
        conversation = await api.create_conversation(user, title="fuzzed")
    return user, str(conversation["id"])


def run_cases(strategy: Any, check: Callable[[Any], None]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    # Unsatisfiable: nothing to vary (an operation without inputs, in negative mode).
    with contextlib.suppress(Unsatisfiable):
        run()


def fuzz_rest(base_url: str, token: str, conversation_id: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures = []

    def check(case: Any) -> None:
        response = case.call(headers=headers, timeout=15)
        case.validate_response(
            response,
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        )

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/graphql"):
            continue  # fuzzed through its own schema below
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        if "{conversation_id}" in operation.path and operation.method.upper() != "DELETE":
            # Also against a conversation that exists, to get past the 404.
            strategies.append(
                operation.as_strategy(path_parameters={"conversation_id": conversation_id})
            )
        for strategy in strategies:
            try:
                run_cases(strategy, check)
            except Exception as error:
                failures.append(f"{operation.label}: {error}")
    return failures


def fuzz_graphql(base_url: str, token: str) -> list[str]:
    schema = schemathesis.graphql.from_url(f"{base_url}/graphql")
    headers = {"Authorization": f"Bearer {token}"}
    failures = []

    def check(case: Any) -> None:
        response = case.call(headers=headers, timeout=15)
        assert response.status_code < 500, (case.body, response.status_code, response.text)
        body = response.json()
        for error in body.get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code in CONTRACT_CODES, (case.body, error)

    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            run_cases(operation.as_strategy(), check)
        except Exception as error:
            failures.append(f"{operation.label}: {error}")
    return failures


async def test_the_rest_api_keeps_to_its_openapi_document(
    server: LiveServer, fuzzer: tuple[User, str]
) -> None:
    user, conversation_id = fuzzer
    failures = await asyncio.to_thread(fuzz_rest, server.base_url, user.token, conversation_id)
    assert failures == [], "\n\n".join(failures)


async def test_the_graphql_endpoint_answers_every_generated_operation_with_contract_errors(
    server: LiveServer, fuzzer: tuple[User, str]
) -> None:
    user, _ = fuzzer
    failures = await asyncio.to_thread(fuzz_graphql, server.base_url, user.token)
    assert failures == [], "\n\n".join(failures)
