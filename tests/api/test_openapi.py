"""/openapi.json, as Swagger UI reads it: an Authorize button that works (the bearer scheme and
Anthropic's `x-api-key` header on every protected route), 401 where it happens, 413 only where a
body can be too large."""

from __future__ import annotations

from typing import Any

from tests.support.api import Api

PUBLIC = {("post", "/api/v1/auth/register"), ("post", "/api/v1/auth/login")}
# Valid bodies, so that what answers is the missing credential (not the body's validation).
BODIES = {
    "/api/v1/api-keys": {"name": "k"},
    "/api/v1/conversations/{conversation_id}/messages/stream": {"content": "x"},
}


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in item.items()
    }


async def test_protected_routes_declare_the_bearer_scheme_and_the_api_key_header(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()

    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": schemes["apiKey"]["description"],
    }
    found = operations(document)
    assert set(found) > PUBLIC
    for key, operation in found.items():
        if key in PUBLIC:
            assert "security" not in operation, key
        else:
            # Either scheme will do (a list of alternatives).
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], key
            assert "401" in operation["responses"], key


async def test_every_documented_protected_route_really_answers_401_without_credentials(
    api: Api,
) -> None:
    document = (await api.http.get("/openapi.json")).json()
    some_id = "00000000-0000-0000-0000-000000000000"
    for (method, path), operation in operations(document).items():
        if "security" not in operation:
            continue
        url = path.replace("{conversation_id}", some_id).replace("{key_id}", some_id)
        body = BODIES.get(path, {}) if "requestBody" in operation else None
        response = await api.http.request(method, url, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["type"] == "authentication_error"


async def test_413_is_documented_only_where_a_body_is_taken(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    for key, operation in operations(document).items():
        assert ("413" in operation["responses"]) == ("requestBody" in operation), key
    login = document["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert "401" in login
