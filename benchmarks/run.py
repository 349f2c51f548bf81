"""`python -m benchmarks.run`: measure the API's streaming path; `make bench` runs it with `--docs`.

    python -m benchmarks.run                          # everything -> benchmarks/.results/<run>/
    python -m benchmarks.run --docs                   # ... and docs/benchmarks.{md,json,png}
    python -m benchmarks.run --only throughput --quick
    python -m benchmarks.run --only capacity --profile 'capacity/sse-*'
    python -m benchmarks.run --only throughput --set DATABASE_POOL_SIZE=30

Every run writes `results.json` (all raw numbers), `report.md`, `benchmarks.png` and each
process's log into its own folder under benchmarks/.results/ (git-ignored). `--profile PATTERN`
records the server with py-spy during every measurement window whose case name matches
(`throughput/app-sse-c100`, `capacity/graphql-n40`, `overhead/sse-c50`, `memory/graphql-1000`,
...; `--list-cases` prints them) and stores flame graphs (or speedscope files) in `profiles/`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import psutil
import uvloop

from benchmarks import report
from benchmarks.procs import RESULTS, ROOT, in_own_session, raise_open_files_limit
from benchmarks.scenarios import Bench, Options, Plan

SCENARIOS = ("ceiling", "throughput", "capacity", "overhead", "memory")
_SESSION_ENV = "BENCHMARK_OWN_SESSION"
DOCS = ROOT / "docs"
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "websockets",
    "strawberry-graphql",
    "graphql-core",
    "sqlalchemy",
    "asyncpg",
    "groq",
    "httpx",
    "orjson",
    "pydantic",
    "psutil",
    "py-spy",
)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios among {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="shorter windows, coarser search")
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks.*")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="*",
        metavar="PATTERN",
        help="py-spy the server during matching cases (fnmatch; default: all)",
    )
    parser.add_argument(
        "--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an API setting for the server under test (repeatable)",
    )
    parser.add_argument("--capacity-max", type=int, help="upper bound of the capacity search")
    parser.add_argument("--memory-subscriptions", type=int, help="websockets in the memory test")
    parser.add_argument(
        "--capacity-lag-only",
        action="store_true",
        help="capacity steps judged on token lag alone, not also on the first token's delay",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--no-priority", action="store_true", help="do not raise the benchmark's priority (nice)"
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL",
            os.environ.get(
                "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
            ),
        ),
        help="a PostgreSQL superuser URL; the run creates and drops its own database there",
    )
    parser.add_argument("--list-cases", action="store_true", help="print case names and exit")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick_plan() if args.quick else Plan.full()
    changes: dict[str, Any] = {}
    if args.capacity_max:
        changes["capacity_max"] = args.capacity_max
    if args.memory_subscriptions:
        changes["memory_subscriptions"] = args.memory_subscriptions
    return replace(plan, **changes)


def _cases(plan: Plan) -> list[str]:
    names = [f"ceiling/{t}-c{c}" for t in ("sse", "ws") for c in plan.ceiling_concurrency]
    names += ["ceiling/sse-c100-lag", "ceiling/ws-c100-lag"]
    names += [f"ceiling/paced-n{n}" for n in plan.ceiling_paced]
    names += [
        f"throughput/{e}-c{c}"
        for c in plan.throughput_concurrency
        for e in ("bare-sse", "app-sse", "bare-ws", "app-graphql")
    ]
    names += ["capacity/sse-n<N>", "capacity/graphql-n<N>"]
    names += [
        f"overhead/{t}-c{c}" for t in ("sse", "graphql") for c in (1, plan.overhead_concurrency)
    ]
    names.append(f"memory/graphql-{plan.memory_subscriptions}")
    return names


def _settings(pairs: Sequence[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise SystemExit(f"--set expects NAME=VALUE, got {pair!r}")
        settings[name.strip().upper()] = value
    return settings


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        # --no-optional-locks: never touches the index (others work in this checkout).
        result = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "app", "benchmarks", "tests/fakes")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": [line[3:] for line in changed.splitlines()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _uvicorn_choices() -> dict[str, str]:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return {
        "http": f"{AutoHTTPProtocol.__module__}.{AutoHTTPProtocol.__name__}",
        "websockets": f"{AutoWebSocketsProtocol.__module__}.{AutoWebSocketsProtocol.__name__}"
        if AutoWebSocketsProtocol
        else "none",
        "loop": loop,
    }


def _machine() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "uvicorn": _uvicorn_choices(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def _main(args: argparse.Namespace, run_dir: Path, log: Callable[[str], None]) -> int:
    plan = _plan(args)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "machine": _machine(),
        "git": _git(),
        "plan": asdict(plan),
        "open_files_limit": raise_open_files_limit(),
        "scenarios": {},
    }
    failed = False
    options = Options(
        plan=plan,
        run_dir=run_dir,
        pin=not args.no_pin,
        priority=not args.no_priority,
        profile=args.profile,
        profile_format=args.profile_format,
        settings=_settings(args.set),
        database_url=args.database_url,
        keep_database=args.keep_database,
        capacity_ttft=not args.capacity_lag_only,
        log=log,
    )
    async with Bench(options) as bench:
        results["pinning"] = bench.pinning.describe()
        for name in (s for s in SCENARIOS if s in selected):
            log(f"{name}:")
            scenario_started = time.monotonic()
            try:
                outcome = await getattr(bench, name)()
            except Exception:  # a broken scenario must not lose the others' numbers
                failed = True
                outcome = {"error": traceback.format_exc()}
                log(outcome["error"])
            outcome["seconds"] = round(time.monotonic() - scenario_started, 1)
            results["scenarios"][name] = outcome
        results["app_environment"] = {
            k: ("<secret>" if "SECRET" in k or "KEY" in k else v)
            for k, v in bench.app_environment.items()
        }
        if bench.database_ready:
            with contextlib.suppress(Exception):
                results["machine"]["postgresql"] = await bench.database.server_version()
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, run_dir / "report.md", run_dir / "benchmarks.png")
    log(f"results in {run_dir}")
    complete = set(selected) == set(SCENARIOS) and not plan.quick
    if args.docs and not complete:
        log("not writing docs/: --docs needs the full plan (all scenarios, no --quick)")
    elif args.docs and failed:
        log("not writing docs/: a scenario failed to run (see above and results.json)")
    elif args.docs:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(run_dir / "results.json", DOCS / "benchmarks.json")
        report.write(results, DOCS / "benchmarks.md", DOCS / "benchmarks.png")
        log(f"wrote {DOCS / 'benchmarks.md'}, benchmarks.json and benchmarks.png")
    log(f"finished in {results['duration_seconds']:.0f}s")
    return 1 if failed else 0


def _in_own_session(argv: Sequence[str]) -> int:
    """Run this command again as the leader of a new session, whose scheduling group the run
    may then prioritise without touching the caller's; Ctrl-C and SIGTERM are passed on."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", *argv],
        env={**os.environ, _SESSION_ENV: "1"},
        start_new_session=True,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: child.send_signal(number))
    return child.wait()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parse(arguments)
    if args.list_cases:
        print("\n".join(_cases(_plan(args))))
        return
    wants_session = not args.no_priority and hasattr(os, "getsid") and Path("/proc").exists()
    if wants_session and not in_own_session() and not os.environ.get(_SESSION_ENV):
        sys.exit(_in_own_session(arguments))
    # Stop cleanly on Ctrl-C or SIGTERM (servers stopped, database dropped), even when started
    # in the background, where SIGINT comes ignored: asyncio's runner then cancels the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda _number, _frame: signal.raise_signal(signal.SIGINT))
    run_dir = RESULTS / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log_file = (run_dir / "run.log").open("a")

    def log(message: str) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    try:
        code = uvloop.run(_main(args, run_dir, log))
    except KeyboardInterrupt:
        log("interrupted: servers stopped, benchmark database dropped (unless --keep-database)")
        code = 130
    finally:
        log_file.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
