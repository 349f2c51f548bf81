"""What a browser or a first `curl` finds outside the API proper: `GET /` says where to go, and
/docs and /graphql (GraphiQL) are made of files this service ships and serves itself."""

from __future__ import annotations

import re

from app.web.assets import ASSETS, VENDOR_DIR, sri
from tests.support.api import Api


def test_every_shipped_file_is_the_pinned_npm_file() -> None:
    shipped = {
        path.relative_to(VENDOR_DIR).as_posix()
        for path in VENDOR_DIR.rglob("*")
        if path.is_file() and not path.name.startswith("LICENSE")
    }
    assert shipped == set(ASSETS)
    for name, asset in ASSETS.items():
        assert sri((VENDOR_DIR / name).read_bytes()) == asset.integrity, name


async def test_both_pages_load_only_files_this_service_serves(api: Api) -> None:
    for page in ("/docs", "/graphql"):
        response = await api.http.get(page, headers={"Accept": "text/html"})
        assert response.status_code == 200, page
        policy = response.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in policy, policy
        sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert sources, page
        for source in sources:
            if source == "data:,":  # the empty favicon
                continue
            assert source.startswith("/assets/"), (page, source)
            served = await api.http.get(source)
            assert served.status_code == 200, source
            asset = ASSETS[source.removeprefix("/assets/")]
            assert sri(served.content) == asset.integrity
            assert f'integrity="{asset.integrity}"' in response.text
            assert "immutable" in served.headers["cache-control"]
    assert (await api.http.get("/assets/react@18.2.0/package.json")).status_code == 404
    assert (await api.http.get("/assets/../config.py")).status_code == 404


async def test_redoc_is_gone_rather_than_blank_offline(api: Api) -> None:
    assert (await api.http.get("/redoc")).status_code == 404


async def test_the_root_points_api_clients_to_the_docs_graphql_and_health(api: Api) -> None:
    response = await api.http.get("/")
    assert response.status_code == 200
    links = {name: link["href"] for name, link in response.json()["links"].items()}
    assert links == {
        "docs": "/docs",
        "openapi": "/openapi.json",
        "graphql": "/graphql",
        "health": "/healthz",
    }
    for href in links.values():
        assert (await api.http.get(href, headers={"Accept": "text/html"})).status_code == 200


async def test_the_root_is_a_small_page_of_links_for_browsers(api: Api) -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await api.http.get("/", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for href in ("/docs", "/graphql", "/healthz"):
        assert f'<a href="{href}">' in response.text
