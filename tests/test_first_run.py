"""First contact from the command line: `python -m app` listens where HOST and PORT (in `.env`
like every setting) say, DATABASE_URL takes the forms people paste, and a wrong one stops the
migration (`make run`'s first step) with one line, not a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings, describe

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**values: str) -> dict[str, str]:
    """The environment without this project's settings, plus `values`."""
    names = {name.upper() for name in Settings.model_fields}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **values}


async def test_python_m_app_listens_on_host_and_port_from_dot_env(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(
        f"HOST=127.0.0.1\nPORT={port}\n"
        f"DATABASE_URL=sqlite+aiosqlite:///{tmp_path}/app.db\nDATA_DIR={tmp_path}/data\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # polling the server's port until it answers, with a deadline
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    if process.returncode is not None:
                        raise AssertionError("the server exited") from None
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_common_database_url_forms_mean_the_async_drivers(given: str, used: str) -> None:
    settings = Settings(_env_file=None, database_url=given, migration_database_url=given)  # type: ignore[call-arg]
    assert settings.database_url == used
    assert settings.migration_database_url == used


@pytest.mark.parametrize(
    "given", ["mysql://u:hunter2@db/app", "postgresql+psycopg2://u:hunter2@db/x", "hunter2"]
)
def test_other_database_urls_are_refused_in_a_line_that_keeps_the_password(given: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, database_url=given)  # type: ignore[call-arg]
    message = describe(raised.value)  # what `python -m app` and Alembic print
    assert message.startswith("DATABASE_URL: ")
    assert "postgresql+asyncpg://" in message and "sqlite+aiosqlite:///" in message
    assert "hunter2" not in message


async def alembic_upgrade(cwd: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(ALEMBIC),
        "-c",
        str(ROOT / "alembic.ini"),
        "upgrade",
        "head",
        cwd=cwd,
        env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://nobody:hunter2@127.0.0.1:1/nowhere",  # nothing listens there
        "sqlite+aiosqlite:////proc/no/such/dir/x.db",  # a file that cannot be created
    ],
)
async def test_an_unreachable_database_stops_the_migration_with_one_line(
    tmp_path: Path, url: str
) -> None:
    code, output = await alembic_upgrade(tmp_path, DATABASE_URL=url)
    assert code != 0
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("conversation-api: cannot connect to the database at ")
    assert "DATABASE_URL" in lines[0] and "Traceback" not in output
    assert "hunter2" not in output


async def test_a_malformed_database_url_stops_the_migration_with_one_line(tmp_path: Path) -> None:
    code, output = await alembic_upgrade(tmp_path, DATABASE_URL="mysql://u:hunter2@db/app")
    assert code != 0
    assert output.strip().count("\n") == 0, output
    assert "DATABASE_URL" in output and "hunter2" not in output and "Traceback" not in output


async def test_a_plain_sqlite_url_migrates(tmp_path: Path) -> None:
    code, output = await alembic_upgrade(tmp_path, DATABASE_URL="sqlite:///./plain.db")
    assert code == 0, output
    assert (tmp_path / "plain.db").stat().st_size > 0
