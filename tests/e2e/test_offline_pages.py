"""Swagger UI at /docs in headless Chromium with every request that would leave loopback
aborted: the page, its files (served by this service, app/web/vendor) and the Authorize + Try it
out flow on a protected route all work without internet. (GraphiQL's offline run, a
subscription over websockets included, is in test_graphiql_browser.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.web.assets import SWAGGER_UI_ASSETS, VENDOR_DIR, sri
from app.web.pages import swagger_page
from tests.conftest import LiveServer
from tests.e2e.conftest import NodeClients
from tests.support.api import Api

pytestmark = pytest.mark.e2e


def test_swagger_ui_assets_are_the_pinned_npm_files(node_modules: Path) -> None:
    for asset in SWAGGER_UI_ASSETS:
        root = node_modules / asset.package
        assert json.loads((root / "package.json").read_text())["version"] == asset.version
        assert asset.integrity == sri((root / asset.path).read_bytes())
        assert (VENDOR_DIR / asset.name).read_bytes() == (root / asset.path).read_bytes()


async def test_swagger_ui_authorizes_and_tries_a_protected_route_offline(
    chromium: NodeClients, server: LiveServer, api: Api, artifacts: Path
) -> None:
    user = await api.register()

    output = await chromium.run(
        "swagger-ui.mjs",
        {
            "docsUrl": f"{server.base_url}/docs",
            "token": user.token,
            "operation": "GET /api/v1/auth/me",
            "screenshot": str(artifacts / "swagger-ui-try-it-out.png"),
        },
    )

    report = output["report"]
    assert report["status"] == 200
    assert report["csp"] == swagger_page()[1]
    assert report["external"] == [] and report["cdnServed"] == []
    for asset in SWAGGER_UI_ASSETS:
        assert f"GET {server.base_url}{asset.url(None)}" in report["requests"]
    assert f"GET {server.base_url}/openapi.json" in report["requests"]
    assert report["pageErrors"] == [] and report["console"] == []
    assert output["status"] == "200", output
    assert json.loads(output["body"])["email"] == user.email
    assert f"Authorization: Bearer {user.token}" in output["curl"]
