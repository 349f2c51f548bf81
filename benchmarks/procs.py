"""Processes the benchmark starts, where they run, what they cost, and the database they use.

Pinning. With two or more usable cores the server under test (API, bare reference or replay
server) gets the first core to itself; this process (the load generator), the upstream fake and
py-spy share the second. Children inherit the parent's affinity, so the orchestrator pins itself
to the load core first and re-pins each server, and every thread it has, to the server core.
PostgreSQL is not ours to pin: its CPU is reported separately (backends of the benchmark's
database), as is what the rest of the machine did on each core, so a noisy run shows as one.

Priority. When allowed (root), the benchmark runs in a session of its own (`benchmarks.run`
re-executes itself there) whose processes are at nice -10, as is the session's scheduling group
(Linux's autogroup: with it, nice only ranks processes within a session, and each session gets
an equal share of a busy core). Other work on the machine then gets little of the cores the
benchmark uses, instead of an equal share.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import resource
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / ".results"


PRIORITY = -10


@dataclass(frozen=True)
class Pinning:
    server: frozenset[int] | None
    load: frozenset[int] | None
    nice: int | None = None  # the niceness every benchmark process runs at, once applied
    group_nice: int | None = None  # the niceness of the session's autogroup, if we set it

    @classmethod
    def choose(cls, enabled: bool) -> Pinning:
        if not enabled or not hasattr(os, "sched_getaffinity"):
            return cls(None, None)
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(frozenset(cores[:1]), frozenset(cores[1:2]))

    def describe(self) -> dict[str, Any]:
        return {
            "server_cores": sorted(self.server) if self.server else None,
            "load_cores": sorted(self.load) if self.load else None,
            "pinned": self.server is not None,
            "nice": self.nice,
            "autogroup_nice": self.group_nice,
        }

    def apply_to_self(self, priority: bool) -> Pinning:
        """Pin this process to the load core and raise its priority; children inherit both."""
        if self.load is not None:
            os.sched_setaffinity(0, self.load)
        group = None
        if priority:
            with contextlib.suppress(PermissionError, OSError):
                os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
            group = _raise_session_group()
        return replace(self, nice=os.getpriority(os.PRIO_PROCESS, 0), group_nice=group)


def _raise_session_group() -> int | None:
    """Raise our autogroup's priority, only if the session is ours alone (we lead it)."""
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) != os.getpid() or not autogroup.exists():
        return None
    try:
        autogroup.write_text(str(PRIORITY))
        return int(autogroup.read_text().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def in_own_session() -> bool:
    return os.getsid(0) == os.getpid()


def pin(pid: int, cores: frozenset[int] | None) -> None:
    """Pin a process and every thread it already has (threads made later inherit). Linux keeps
    affinity per thread, so pinning only the pid would leave earlier threads where they were."""
    if cores is None:
        return
    with contextlib.suppress(psutil.Error, OSError):
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, cores)


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_running: set[asyncio.subprocess.Process] = set()


@atexit.register
def _kill_leftovers() -> None:
    """If we die without stopping the servers, they must not outlive us."""
    for process in _running:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


@dataclass(eq=False)
class Service:
    """A child process serving on a port."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path
    cores: frozenset[int] | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def repin(self) -> None:
        pin(self.pid, self.cores)

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    async def stop(self, timeout: float = 15.0) -> None:
        _running.discard(self.process)
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def start_service(
    name: str,
    module_args: Sequence[str],
    *,
    port: int,
    cores: frozenset[int] | None,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    ready_path: str | None = None,
    clean_env: set[str] | None = None,
    timeout: float = 60.0,
) -> Service:
    """`python -m <module_args>`, pinned; returns once the port (and `ready_path`) answers.

    `clean_env`: variables not inherited from our environment (only `env` sets them).
    """
    log = log_dir / f"{name}.log"
    inherited = {k: v for k, v in os.environ.items() if k not in (clean_env or set())}
    environment = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            cwd=cwd,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    _running.add(process)
    service = Service(name, port, process, log, cores)
    service.repin()
    deadline = time.monotonic() + timeout
    while not await _answers(port, ready_path):
        if process.returncode is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            await service.stop()
            raise RuntimeError(f"{name} did not start in {timeout:g}s:\n{service.log_tail()}")
        await asyncio.sleep(0.05)
    service.repin()  # threads started during startup (thread pools, uvloop's resolver)
    return service


async def _answers(port: int, path: str | None) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        if path is None:
            return True
        writer.write(b"GET %b HTTP/1.1\r\nhost: localhost\r\n\r\n" % path.encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        return line.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- CPU and memory accounting ---


def _cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    processes: dict[str, float]
    postgres: float
    per_core_busy: list[float]  # seconds each core was busy (anything), since boot
    per_core_total: list[float]


@dataclass
class CpuProbe:
    """CPU seconds of our processes, of PostgreSQL's backends for our database, and per core."""

    processes: dict[str, int] = field(default_factory=dict)  # role -> pid
    database: str | None = None

    def snapshot(self) -> CpuSnapshot:
        per_core = psutil.cpu_times(percpu=True)
        busy = [t.user + t.nice + t.system + t.irq + t.softirq + t.steal for t in per_core]
        total = [b + t.idle + t.iowait for b, t in zip(busy, per_core, strict=True)]
        return CpuSnapshot(
            at=time.monotonic(),
            processes={role: _cpu_seconds(pid) for role, pid in self.processes.items()},
            postgres=self._postgres(),
            per_core_busy=busy,
            per_core_total=total,
        )

    def _postgres(self) -> float:
        if self.database is None:
            return 0.0
        total = 0.0
        marker = f" {self.database} "
        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                if process.info["name"] != "postgres":
                    continue
                title = " ".join(process.info["cmdline"] or [])
                if marker in title:
                    times = process.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                continue
        return total

    @staticmethod
    def usage(before: CpuSnapshot, after: CpuSnapshot, pinning: Pinning) -> dict[str, Any]:
        wall = after.at - before.at
        seconds = {
            role: round(after.processes.get(role, 0.0) - before.processes.get(role, 0.0), 4)
            for role in after.processes
        }
        cores = []
        for index in range(len(after.per_core_busy)):
            spent = after.per_core_total[index] - before.per_core_total[index]
            busy = after.per_core_busy[index] - before.per_core_busy[index]
            cores.append(round(busy / spent, 3) if spent > 0 else None)
        result: dict[str, Any] = {
            "wall_seconds": round(wall, 4),
            "cpu_seconds": seconds,
            "utilisation": {role: round(s / wall, 3) for role, s in seconds.items()}
            if wall
            else {},
            # Approximate: a backend that exits inside the window takes its CPU time with it.
            "postgres_cpu_seconds": round(max(0.0, after.postgres - before.postgres), 4),
            "core_busy": cores,
        }
        if pinning.load is not None and wall:
            load_core = min(pinning.load)
            ours = sum(s for role, s in seconds.items() if role != "server")
            result["load_core_busy"] = cores[load_core]
            result["load_core_ours"] = round(ours / wall, 3)
        if pinning.server is not None and wall:
            result["server_core_busy"] = cores[min(pinning.server)]
        return result


# --- the benchmark's own PostgreSQL database ---


def _asyncpg_dsn(url: str, database: str | None = None, user: str | None = None) -> str:
    from sqlalchemy import make_url

    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlalchemy_url(url: str, database: str, user: str | None = None) -> str:
    from sqlalchemy import make_url

    parsed = make_url(url).set(drivername="postgresql+asyncpg", database=database)
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.render_as_string(hide_password=False)


@dataclass
class BenchDatabase:
    """A fresh database per run, migrated by Alembic as the owner; the API connects as the
    application role (Row Level Security in force), exactly as the test suite does."""

    admin_url: str  # a superuser on the server's maintenance database
    name: str
    app_role: str = "conversation_app"

    @property
    def owner_url(self) -> str:
        return _sqlalchemy_url(self.admin_url, self.name)

    @property
    def app_url(self) -> str:
        return _sqlalchemy_url(self.admin_url, self.name, self.app_role)

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(self.admin_url))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self, log_dir: Path) -> None:
        await self._admin(
            f'DROP DATABASE IF EXISTS "{self.name}"', f'CREATE DATABASE "{self.name}"'
        )
        env = {
            **os.environ,
            "DATABASE_URL": self.owner_url,
            "MIGRATION_DATABASE_URL": self.owner_url,
            "DATABASE_APP_ROLE": self.app_role,
        }
        with (log_dir / "alembic.log").open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "alembic", "upgrade", "head", cwd=ROOT, env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            if await process.wait() != 0:
                raise RuntimeError(f"migrations failed: see {log_dir / 'alembic.log'}")

    async def query(self, statement: str) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(_asyncpg_dsn(self.admin_url, self.name))
        try:
            return [dict(row) for row in await connection.fetch(statement)]
        finally:
            await connection.close()

    async def clone_conversations(self, copies: dict[str, int]) -> dict[str, list[str]]:
        """`copies[id]` more conversations like conversation `id` (same owner, model, title).

        Conversations made through the API one by one would take minutes; the clones are rows
        like the API's (every column copied but the id, whatever the schema grows into).
        """
        ids = list(copies)
        rows = await self.query_args(
            "INSERT INTO conversations "
            "SELECT (jsonb_populate_record(c, jsonb_build_object('id', gen_random_uuid()))).* "
            "FROM conversations c "
            "JOIN unnest($1::uuid[], $2::int[]) AS wanted(id, copies) ON wanted.id = c.id "
            "CROSS JOIN LATERAL generate_series(1, wanted.copies) "
            "RETURNING id, user_id",
            [uuid.UUID(i) for i in ids],
            [copies[i] for i in ids],
        )
        owners = {
            str(row["user_id"]): str(row["id"])
            for row in await self.query_args(
                "SELECT id, user_id FROM conversations WHERE id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
            )
        }
        clones: dict[str, list[str]] = {i: [] for i in ids}
        for row in rows:
            clones[owners[str(row["user_id"])]].append(str(row["id"]))
        return clones

    async def query_args(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(_asyncpg_dsn(self.admin_url, self.name))
        try:
            return [dict(row) for row in await connection.fetch(statement, *args)]
        finally:
            await connection.close()

    async def reset_messages(self) -> None:
        """Empty every conversation, so prompts (the history sent upstream) stay small."""
        await self.query("DELETE FROM messages")

    async def drop(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def server_version(self) -> str:
        rows = await self.query("SHOW server_version")
        return str(rows[0]["server_version"])
