"""Test harness: real databases, a real server on loopback, a fake Groq as the only fake.

- `pytest --db postgres` (the default) or `--db sqlite` picks the database the whole run uses.
- Alembic migrates a template database once per run. Each test module gets a fresh copy of it
  (PostgreSQL: `CREATE DATABASE ... TEMPLATE`; SQLite: a file copy) and its own server, so
  modules never see each other's rows.
- On PostgreSQL the server connects as the application role (not a superuser, no BYPASSRLS, owns
  nothing), exactly as in production, so Row Level Security is in force in every test.
- The server is uvicorn on 127.0.0.1 in the test's event loop: tests talk to it over real HTTP and
  websockets. The model provider is the loopback fake Groq server in tests/fakes.
- A module customises its server's settings by defining a `server_settings` fixture returning a
  dict of Settings overrides.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alembic import command
from app.config import Settings
from app.main import create_app
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.groq_server import FakeGroq
from tests.fakes.openai_server import FakeOpenAI
from tests.support.api import Api

ROOT = Path(__file__).resolve().parent.parent
APP_ROLE = "conversation_app"
TEST_API_KEY = "gsk_test_not_a_real_key"
TEST_JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("postgres", "sqlite"),
        default=os.environ.get("TEST_DB", "postgres"),
        help="database every test runs against",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--db") != "sqlite":
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only (Row Level Security, roles)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Database:
    kind: str
    app_url: str  # what the server connects with (the application role on PostgreSQL)
    owner_url: str  # table owner / superuser: migrations and test assertions


def _admin_url() -> str:
    return os.environ.get(
        "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )


def _with_database(url: str, database: str, user: str | None = None) -> str:
    parsed = make_url(url).set(database=database)
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.render_as_string(hide_password=False)


async def _admin_execute(*statements: str) -> None:
    engine = create_async_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def migrate(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["app_role"] = APP_ROLE
    if downgrade:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


async def migrate_async(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    # Alembic's env runs its own event loop; keep it off the test loop.
    await asyncio.to_thread(migrate, url, revision, downgrade=downgrade)


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


async def _postgres_reachable() -> bool:
    try:
        await _admin_execute("SELECT 1")
    except (OSError, Exception):
        return False
    return True


@pytest.fixture(scope="session")
async def template_database(
    db_kind: str, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """A database migrated to head once per run; modules get copies of it."""
    if db_kind == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "template.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate_async(url)
        yield Database("sqlite", url, url)
        return
    if not await _postgres_reachable():
        message = f"PostgreSQL is not reachable at {make_url(_admin_url()).host}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: an unreachable database fails the run)")
        pytest.skip(message)
    name = f"cvtest_{run_id}_template"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    owner = _with_database(_admin_url(), name)
    try:
        await migrate_async(owner)
        yield Database("postgres", _with_database(_admin_url(), name, APP_ROLE), owner)
    finally:
        await _drop_database(name)


async def _drop_database(name: str) -> None:
    await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_clone_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
async def database(
    template_database: Database, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """A fresh, migrated database for one test module."""
    number = next(_clone_counter)
    if template_database.kind == "sqlite":
        source = make_url(template_database.owner_url).database
        assert source is not None
        target = tmp_path_factory.mktemp("sqlite") / f"module_{number}.db"
        shutil.copyfile(source, target)
        url = f"sqlite+aiosqlite:///{target}"
        yield Database("sqlite", url, url)
        return
    name = f"cvtest_{run_id}_{number}"
    template = make_url(template_database.owner_url).database
    await _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield Database(
            "postgres",
            _with_database(_admin_url(), name, APP_ROLE),
            _with_database(_admin_url(), name),
        )
    finally:
        await _drop_database(name)


@pytest.fixture(scope="module")
async def owner_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """A connection that sees every row (superuser on PostgreSQL): for assertions only."""
    engine = create_async_engine(database.owner_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def fake_groq() -> AsyncIterator[FakeGroq]:
    async with FakeGroq(api_key=TEST_API_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=TEST_API_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=TEST_API_KEY) as fake:
        yield fake


_FAKES = ("fake_groq", "fake_openai", "fake_anthropic")


@pytest.fixture(autouse=True)
def _reset_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in _FAKES:
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def every_provider(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    """Settings overrides adding OpenAI and Anthropic (their fakes) to `base_settings`' Groq."""
    return {
        "openai_api_key": TEST_API_KEY,
        "openai_base_url": f"{fake_openai.base_url}/v1",
        "anthropic_api_key": TEST_API_KEY,
        "anthropic_base_url": fake_anthropic.base_url,
    }


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    """Per-module Settings overrides; a module redefines this fixture to change them."""
    return {}


def base_settings(
    database: Database, fake_groq: FakeGroq, data_dir: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database.app_url,
        "data_dir": data_dir,
        "jwt_secret": TEST_JWT_SECRET,
        "bcrypt_rounds": 4,
        "llm_provider": "groq",
        "groq_api_key": TEST_API_KEY,
        "groq_base_url": fake_groq.base_url,
        "llm_max_retries": 2,
        "llm_timeout_seconds": 5,
        "llm_retry_max_wait_seconds": 3,
        "echo_token_delay_seconds": 0,
        "log_level": "WARNING",
        "database_pool_size": 20,
        # Every test client is 127.0.0.1 and suites sign up hundreds of users a minute: the
        # abuse limits are raised here; tests/security sets the ones it exercises.
        "login_rate_limit_per_ip": "100000/minute",
        "login_rate_limit_per_email": "100000/minute",
        "register_rate_limit_per_ip": "100000/minute",
        "register_rate_limit_per_email": "100000/minute",
        "reply_rate_limit_per_user": "100000/minute",
        "write_rate_limit_per_user": "100000/minute",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    settings: Settings
    port: int
    app: FastAPI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_server(settings: Settings) -> tuple[LiveServer, uvicorn.Server, asyncio.Task[None]]:
    port = _free_port()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        proxy_headers=False,  # as `python -m app` runs: X-Forwarded-For is the app's to judge
        lifespan="on",
        log_config=None,
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=settings.ws_compression,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raise why it failed to start
        await asyncio.sleep(0.01)
    live = LiveServer(
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}/graphql",
        settings=settings,
        port=port,
        app=app,
    )
    return live, server, task


async def stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, timeout=30)


@pytest.fixture(scope="module")
async def server(
    database: Database,
    fake_groq: FakeGroq,
    server_settings: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LiveServer]:
    settings = base_settings(
        database, fake_groq, tmp_path_factory.mktemp("data"), **server_settings
    )
    live, uv_server, task = await start_server(settings)
    try:
        yield live
    finally:
        await stop_server(uv_server, task)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def api(http: httpx.AsyncClient, server: LiveServer) -> Api:
    return Api(http, server.ws_url)
