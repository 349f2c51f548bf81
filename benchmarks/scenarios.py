"""The measurements: load-generator ceiling, throughput, capacity, added TTFT, memory.

`Bench` owns the processes (upstream fake, API, bare reference, replay server), the database and
the accounts; each scenario method returns plain data for `results.json`. Scenario parameters
live in `Plan` (`Plan.full()` for `make bench`, `Plan.quick_plan()` for a fast look).
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.clients import Meter
from benchmarks.load import (
    Endpoint,
    Lane,
    LoopSettings,
    Profiler,
    anonymous_lanes,
    assign_lanes,
    close_sessions,
    closed_loop,
    lag_summary,
    open_subscriptions,
    settle,
    ttft_summary,
)
from benchmarks.procs import BenchDatabase, CpuProbe, Pinning, Service, free_port, start_service
from benchmarks.wire import Directive

UPSTREAM_API_KEY = "gsk_benchmark_not_a_real_key"
SSE_PATH = "/api/v1/conversations/{conversation}/messages/stream"
CHAT_PATH = "/openai/v1/chat/completions"
PASSWORD = "benchmark-password-1"  # noqa: S105  (throwaway accounts in a throwaway database)
LAG_LIMIT_MS = 100.0
LOAD_BOUND = 0.9  # share of the load core our load side used, above which it may be the limit


@dataclass(frozen=True)
class Plan:
    """Every knob of a run; recorded in the results."""

    quick: bool
    # Load generator ceiling: the replay server, fast replies.
    ceiling_window: float
    ceiling_concurrency: tuple[int, ...]
    ceiling_paced: tuple[int, ...]  # paced streams straight from the fake to the client
    # Throughput: upstream as fast as possible.
    throughput_tokens: int
    throughput_concurrency: tuple[int, ...]
    throughput_warmup: float
    throughput_window: float
    # Capacity: Groq-paced replies, search over concurrent streams.
    paced: Directive
    capacity_warmup: float
    capacity_window: float
    capacity_start: int
    capacity_max: int
    capacity_resolution: float  # stop bisecting when the bracket is this fraction of the pass
    # Added time to first token.
    overhead_single: Directive
    overhead_single_window: float
    overhead_concurrency: int
    overhead_warmup: float
    overhead_window: float
    # Memory.
    memory_subscriptions: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            ceiling_window=2.5,
            ceiling_concurrency=(1, 100),
            ceiling_paced=(200, 500),
            throughput_tokens=1000,
            throughput_concurrency=(1, 100),
            throughput_warmup=1.5,
            throughput_window=5.0,
            paced=Directive("paced", tokens=300, ftd=0.1, interval=0.002),
            capacity_warmup=2.0,
            capacity_window=8.0,
            capacity_start=10,
            capacity_max=500,  # past ~400 the load side itself lags (see ceiling/paced)
            capacity_resolution=0.1,
            overhead_single=Directive("paced", tokens=20, ftd=0.1, interval=0.002),
            overhead_single_window=8.0,
            overhead_concurrency=50,
            overhead_warmup=2.0,
            overhead_window=8.0,
            memory_subscriptions=1000,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        return replace(
            cls.full(),
            quick=True,
            ceiling_window=1.5,
            ceiling_concurrency=(100,),
            ceiling_paced=(200,),
            throughput_warmup=0.5,
            throughput_window=2.0,
            capacity_warmup=1.0,
            capacity_window=4.0,
            capacity_max=300,
            capacity_resolution=0.25,
            overhead_single_window=3.0,
            overhead_warmup=1.0,
            overhead_window=4.0,
            memory_subscriptions=200,
        )

    @property
    def users(self) -> int:
        most = max(self.capacity_max, self.memory_subscriptions, *self.throughput_concurrency)
        return math.ceil(max(most, self.overhead_concurrency) / 2)


@dataclass
class Options:
    plan: Plan
    run_dir: Path
    pin: bool = True
    priority: bool = True
    profile: str | None = None  # fnmatch pattern over case names
    profile_format: str = "flamegraph"
    settings: dict[str, str] = field(default_factory=dict)  # API settings from --set
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    keep_database: bool = False
    capacity_ttft: bool = True  # a capacity step also needs added TTFT p99 under the limit
    log: Callable[[str], None] = print


class Bench:
    """One run: its processes, database and accounts; a method per scenario."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.plan = options.plan
        self.log = options.log
        self.run_dir = options.run_dir
        self.pinning = Pinning.choose(options.pin)
        self.epoch = float(int(time.time()))
        self.jwt_secret = secrets.token_urlsafe(48)
        self.database = BenchDatabase(
            options.database_url, f"bench_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
        )
        self.database_ready = False
        self.upstream: Service | None = None
        self.app: Service | None = None
        self.reference: Service | None = None
        self.replay: Service | None = None
        self.accounts: list[tuple[str, list[str]]] = []
        self.app_environment: dict[str, str] = {}

    # --- lifecycle ---

    async def __aenter__(self) -> Bench:
        self.pinning = self.pinning.apply_to_self(self.options.priority)
        port = free_port()
        self.upstream = await start_service(
            "upstream",
            ["benchmarks.upstream", "--port", str(port), "--api-key", UPSTREAM_API_KEY,
             "--epoch", str(self.epoch)],
            port=port, cores=self.pinning.load, log_dir=self.run_dir,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for service in (self.app, self.reference, self.replay, self.upstream):
            if service is not None:
                await service.stop()
        if self.database_ready and not self.options.keep_database:
            await self.database.drop()

    def _probe(self, server: Service | None) -> CpuProbe:
        assert self.upstream is not None
        processes = {"load": os.getpid(), "upstream": self.upstream.pid}
        if server is not None:
            processes["server"] = server.pid
        database = self.database.name if server is self.app and server is not None else None
        return CpuProbe(processes, database)

    def _profiler(self, case: str, server: Service) -> tuple[Profiler, str] | None:
        pattern = self.options.profile
        if pattern is None or not fnmatch.fnmatch(case, pattern):
            return None
        directory = self.run_dir / "profiles"
        return Profiler(server.pid, directory, self.options.profile_format), case

    async def _start_reference(self) -> Service:
        if self.reference is None:
            port = free_port()
            self.reference = await start_service(
                "reference", ["benchmarks.reference", "--port", str(port)],
                port=port, cores=self.pinning.server, log_dir=self.run_dir,
            )  # fmt: skip
        return self.reference

    async def _start_replay(self) -> Service:
        if self.replay is None:
            port = free_port()
            self.replay = await start_service(
                "replay", ["benchmarks.replay", "--port", str(port)],
                port=port, cores=self.pinning.server, log_dir=self.run_dir,
            )  # fmt: skip
        return self.replay

    async def start_app(self) -> Service:
        """A fresh API process (each scenario gets its own, so none inherits another's heap)."""
        if not self.database_ready:
            self.log(f"creating database {self.database.name} and migrating")
            await self.database.create(self.run_dir)
            self.database_ready = True
        if self.app is not None:
            await self.app.stop()
        assert self.upstream is not None
        self.app_environment = self._app_environment(self.upstream.port)
        port = free_port()
        (self.run_dir / "data").mkdir(exist_ok=True)
        self.app = await start_service(
            "app", ["app", "--host", "127.0.0.1", "--port", str(port)],
            port=port, cores=self.pinning.server, log_dir=self.run_dir,
            env=self.app_environment, cwd=self.run_dir, ready_path="/readyz",
            clean_env=_app_setting_names(),
        )  # fmt: skip
        if not self.accounts:
            await self._create_accounts(port)
        return self.app

    def _app_environment(self, upstream_port: int) -> dict[str, str]:
        environment = {
            "APP_ENV": "production",
            "DATABASE_URL": self.database.app_url,
            "JWT_SECRET": self.jwt_secret,
            "LLM_PROVIDER": "groq",
            "GROQ_API_KEY": UPSTREAM_API_KEY,
            "GROQ_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": str(self.run_dir / "data"),
            # Fast account setup; streams authenticate with JWTs, never with bcrypt.
            "BCRYPT_ROUNDS": "4",
            "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
            # The memory scenario holds replies on a silent upstream for longer than the default.
            "LLM_TIMEOUT_SECONDS": "300",
            "SHUTDOWN_GRACE_SECONDS": "2",
            # Abuse limits stay on (their cost is part of every reply) but out of reach: the
            # benchmark registers hundreds of users from one address and streams thousands of
            # replies per user. Unknown names are ignored by the settings (extra="ignore").
            "REGISTER_RATE_LIMIT_PER_IP": "100000000/hour",
            "REPLY_RATE_LIMIT_PER_USER": "100000000/hour",
        }
        environment.update(self.options.settings)
        return environment

    async def _create_accounts(self, port: int) -> None:
        """Users through the API (register, one conversation each), then more conversations per
        user by cloning, so that no lane reuses a conversation much within a window: the
        history the API sends upstream, and so the work per reply, stays the same all run."""
        users = self.plan.users
        self.log(f"registering {users} users")
        started = time.monotonic()
        gate = asyncio.Semaphore(8)
        accounts: list[tuple[str, str] | None] = [None] * users
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            async def one(index: int) -> None:
                async with gate:
                    email = f"user{index}@{self.database.name}.example.com"
                    response = await http.post(
                        "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
                    )
                    response.raise_for_status()
                    token = response.json()["access_token"]
                    response = await http.post(
                        "/api/v1/conversations",
                        json={"title": "bench"},
                        headers={"authorization": f"Bearer {token}"},
                    )
                    response.raise_for_status()
                    accounts[index] = (token, str(response.json()["id"]))

            await asyncio.gather(*(one(index) for index in range(users)))
        made = [account for account in accounts if account is not None]
        clones = await self.database.clone_conversations(
            {
                conversation: conversations_for_user(i) - 1
                for i, (_, conversation) in enumerate(made)
            }
        )
        self.accounts = [(token, [first, *clones[first]]) for token, first in made]
        total = sum(len(conversations) for _, conversations in self.accounts)
        self.log(f"  {users} users, {total} conversations in {time.monotonic() - started:.1f}s")

    async def _upstream_stats(self, reset: bool = False) -> dict[str, Any]:
        assert self.upstream is not None
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{self.upstream.port}/bench/stats"
            response = await (http.post(url) if reset else http.get(url))
            result: dict[str, Any] = response.json()
            return result

    def _app_endpoints(self) -> tuple[Endpoint, Endpoint]:
        assert self.app is not None
        return (
            Endpoint("app-sse", "sse", self.app.port, SSE_PATH),
            Endpoint("app-graphql", "ws", self.app.port, "/graphql"),
        )

    async def _run(
        self,
        case: str,
        server: Service,
        endpoint: Endpoint,
        lanes: Sequence[Lane],
        directive: Directive,
        settings: LoopSettings,
        *,
        lag: bool = False,
    ) -> tuple[dict[str, Any], Meter]:
        probe = self._probe(server)
        settled = await settle(probe)  # the last run's replies are finalised by now
        if server is self.app:
            await self.database.reset_messages()
        await self._upstream_stats(reset=True)
        meter = Meter(self.epoch, measure_lag=lag)
        result = await closed_loop(
            endpoint,
            lanes,
            directive,
            meter,
            settings,
            probe,
            self.pinning,
            self._profiler(case, server),
        )
        result["upstream"] = await self._upstream_stats()
        result["settle_seconds_before"] = settled
        result["server_rss_bytes"] = server.rss()
        result = {
            "case": case,
            "endpoint": endpoint.name,
            "directive": directive.render(),
            **result,
        }
        # Our load side (client, fake, py-spy) near a full core: the numbers may be its limit.
        load_side = result["cpu"].get("load_core_ours")
        result["load_bound"] = bool(load_side is not None and load_side > LOAD_BOUND)
        return result, meter

    # --- scenarios ---

    async def ceiling(self) -> dict[str, Any]:
        """How many events/s the load generator itself can read (the replay server costs ~0)."""
        replay = await self._start_replay()
        directive = Directive("fast", tokens=self.plan.throughput_tokens)
        settings = LoopSettings(warmup=0.5, duration=self.plan.ceiling_window)
        cases = []
        for transport, path in (("sse", "/sse"), ("ws", "/ws")):
            endpoint = Endpoint(f"replay-{transport}", transport, replay.port, path)  # type: ignore[arg-type]
            runs = [(c, False) for c in self.plan.ceiling_concurrency] + [(100, True)]
            for concurrency, lag in runs:
                name = f"ceiling/{transport}-c{concurrency}{'-lag' if lag else ''}"
                result, _ = await self._run(
                    name,
                    replay,
                    endpoint,
                    anonymous_lanes(concurrency),
                    directive,
                    settings,
                    lag=lag,
                )
                load = result["cpu"]["cpu_seconds"].get("load", 0.0)
                result["concurrency"] = concurrency
                result["parses_lag"] = lag
                result["tokens_per_load_cpu_second"] = (
                    round(result["tokens"] / load, 1) if load else None
                )
                cases.append(result)
                self.log(
                    f"  {name:28s} {result['tokens_per_second']:>10,.0f} events/s "
                    f"(load process {result['cpu']['utilisation'].get('load', 0):.0%} busy, "
                    f"{result['tokens_per_load_cpu_second'] or 0:,.0f} per load CPU-s)"
                )
        await replay.stop()
        self.replay = None
        return {"cases": cases, "paced": await self._paced_ceiling()}

    async def _paced_ceiling(self) -> list[dict[str, Any]]:
        """Groq-paced streams straight from the fake to the client: the lag the load side alone
        adds, at as many streams as the capacity target asks for."""
        assert self.upstream is not None
        fake = Endpoint("upstream", "sse", self.upstream.port, CHAT_PATH, body="chat")
        directive = self.plan.paced
        settings = LoopSettings(
            warmup=1.5, duration=self.plan.ceiling_window * 2, stagger=directive.duration
        )
        cases = []
        for count in self.plan.ceiling_paced:
            name = f"ceiling/paced-n{count}"
            lanes = [Lane(UPSTREAM_API_KEY, ("fake",))] * count
            result, meter = await self._run(
                name, self.upstream, fake, lanes, directive, settings, lag=True
            )
            lag = lag_summary(meter)
            result["streams"] = count
            result["lag"] = lag
            cases.append(result)
            self.log(
                f"  {name:28s} lag p50 {lag.get('p50_ms', 0):6.1f} p99 {lag.get('p99_ms', 0):6.1f}"
                f" ms, {result['tokens_per_second']:>9,.0f} tokens/s, load side "
                f"{result['cpu'].get('load_core_ours') or 0:.0%} of its core, upstream late p99 "
                f"{result['upstream']['schedule_lag_ms']['p99']} ms"
            )
        return cases

    async def throughput(self) -> dict[str, Any]:
        """Tokens per server CPU-second, upstream as fast as possible, API vs bare endpoints."""
        reference = await self._start_reference()
        app = await self.start_app()
        app_sse, app_graphql = self._app_endpoints()
        bare_sse = Endpoint("bare-sse", "sse", reference.port, "/sse")
        bare_ws = Endpoint("bare-ws", "ws", reference.port, "/ws")
        directive = Directive("fast", tokens=self.plan.throughput_tokens)
        cases = []
        for concurrency in self.plan.throughput_concurrency:
            settings = LoopSettings(
                warmup=self.plan.throughput_warmup,
                duration=self.plan.throughput_window,
                warmup_streams=concurrency,
            )
            app_lanes = assign_lanes(self.accounts, concurrency)
            for endpoint, server, lanes in (
                (bare_sse, reference, anonymous_lanes(concurrency)),
                (app_sse, app, app_lanes),
                (bare_ws, reference, anonymous_lanes(concurrency)),
                (app_graphql, app, app_lanes),
            ):
                name = f"throughput/{endpoint.name}-c{concurrency}"
                result, _ = await self._run(name, server, endpoint, lanes, directive, settings)
                result["concurrency"] = concurrency
                cases.append(result)
                self.log(
                    f"  {name:34s} {result['tokens_per_second']:>9,.0f} tokens/s "
                    f"{result['tokens_per_server_cpu_second'] or 0:>9,.0f} per server CPU-s "
                    f"(server {result['cpu']['utilisation'].get('server', 0):.0%}, "
                    f"{result['tokens_per_frame'] or 0:g} tokens/frame, errors {result['errors']})"
                )
        await reference.stop()
        self.reference = None
        return {"tokens_per_reply": self.plan.throughput_tokens, "cases": cases}

    async def capacity(self) -> dict[str, Any]:
        """Most concurrent Groq-paced streams with p99 lag < 100 ms and no errors."""
        await self.start_app()
        directive = self.plan.paced
        transports = {}
        for endpoint in self._app_endpoints():
            label = "sse" if endpoint.transport == "sse" else "graphql"
            transports[label] = await self._search(label, endpoint, directive)
        return {
            "directive": asdict(directive),
            "lag_limit_ms": LAG_LIMIT_MS,
            "first_token_counts": self.options.capacity_ttft,
            **transports,
        }

    async def _search(self, label: str, endpoint: Endpoint, directive: Directive) -> dict[str, Any]:
        plan = self.plan
        settings = LoopSettings(
            warmup=plan.capacity_warmup,
            duration=plan.capacity_window,
            stagger=directive.duration,
            stream_timeout=30.0,
        )
        steps: list[dict[str, Any]] = []
        best, worst = 0, None  # largest passing, smallest failing
        count = min(plan.capacity_start, plan.capacity_max)
        while True:
            step = await self._capacity_step(label, endpoint, directive, settings, count)
            steps.append(step)
            if step["passed"]:
                best = max(best, count)
            else:
                worst = count if worst is None else min(worst, count)
            if worst is None:
                if count >= plan.capacity_max:
                    break
                count = min(count * 2, plan.capacity_max)
                continue
            if worst - best <= max(1, math.ceil(plan.capacity_resolution * best)):
                break
            count = (best + worst) // 2
        passing = [s for s in steps if s["passed"]]
        best_step = max(passing, key=lambda s: s["streams"]) if passing else None
        return {
            "capacity": best,
            "first_failure": worst,
            "capped": worst is None,
            "load_bound": any(s["load_bound"] for s in steps if s["streams"] in (best, worst)),
            "best_step": best_step["case"] if best_step else None,
            "steps": steps,
        }

    async def _capacity_step(
        self,
        label: str,
        endpoint: Endpoint,
        directive: Directive,
        settings: LoopSettings,
        count: int,
    ) -> dict[str, Any]:
        assert self.app is not None
        name = f"capacity/{label}-n{count}"
        lanes = assign_lanes(self.accounts, count)
        result, meter = await self._run(
            name, self.app, endpoint, lanes, directive, settings, lag=True
        )
        lag = lag_summary(meter)
        result["streams"] = count
        result["lag"] = lag
        result["ttft"] = {k: v for k, v in ttft_summary(meter).items() if k != "added_ms_raw"}
        # If replies took no time beyond the upstream's own: the most the lanes could receive.
        expected = count * directive.tokens / directive.duration
        result["expected_tokens_per_second_upper_bound"] = round(expected, 1)
        # Streams really running at the upstream's pace, on average (the rest are starting).
        result["effective_streams"] = round(result["tokens_per_second"] / (expected / count), 1)
        reasons = []
        if result["errors_total"]:
            reasons.append(f"{sum(result['errors_total'].values())} errors")
        if result["unfinished_at_stop"]:
            reasons.append(f"{result['unfinished_at_stop']} streams stuck at the end")
        if not lag.get("tokens"):
            reasons.append("no tokens")
        elif lag["p99_ms"] >= LAG_LIMIT_MS:
            reasons.append(f"p99 lag {lag['p99_ms']:.1f} ms")
        # A saturated server keeps token lag low by starting replies late (lanes then wait, and
        # fewer than `count` streams really run): the first token's delay counts too.
        first = (result["ttft"].get("added_ms") or {}).get("p99")
        if self.options.capacity_ttft and first is not None and first >= LAG_LIMIT_MS:
            reasons.append(f"p99 first-token delay {first:.1f} ms")
        result["passed"] = not reasons
        result["failure"] = ", ".join(reasons) or None
        self.log(
            f"  {name:26s} {'FAIL' if reasons else 'pass':4s} "
            f"lag p50 {lag.get('p50_ms', 0):7.1f}"
            f" p99 {lag.get('p99_ms', 0):7.1f} ms, {result['tokens_per_second']:>8,.0f} tokens/s, "
            f"server {result['cpu']['utilisation'].get('server', 0):.0%}, "
            f"load side {result['cpu'].get('load_core_ours') or 0:.0%}"
            + (f" ({result['failure']})" if reasons else "")
        )
        return result

    async def overhead(self) -> dict[str, Any]:
        """Time to first token added by the API: client-observed minus the upstream's."""
        await self.start_app()
        cases = []
        single = LoopSettings(warmup=0.5, duration=self.plan.overhead_single_window)
        loaded = LoopSettings(
            warmup=self.plan.overhead_warmup,
            duration=self.plan.overhead_window,
            stagger=self.plan.paced.duration,
            stream_timeout=30.0,
        )
        for endpoint in self._app_endpoints():
            label = "sse" if endpoint.transport == "sse" else "graphql"
            for concurrency, directive, settings in (
                (1, self.plan.overhead_single, single),
                (self.plan.overhead_concurrency, self.plan.paced, loaded),
            ):
                assert self.app is not None
                name = f"overhead/{label}-c{concurrency}"
                lanes = assign_lanes(self.accounts, concurrency)
                result, meter = await self._run(
                    name, self.app, endpoint, lanes, directive, settings, lag=True
                )
                result["concurrency"] = concurrency
                result["transport"] = label
                result["ttft"] = ttft_summary(meter)
                result["lag"] = {
                    k: v for k, v in lag_summary(meter).items() if not k.startswith("histogram")
                }
                ttft = result["ttft"]
                cases.append(result)
                added = ttft.get("added_ms") or {}
                self.log(
                    f"  {name:24s} added TTFT p50 {_ms(added.get('p50'))}, "
                    f"p99 {_ms(added.get('p99'))} over {ttft['samples']} replies "
                    f"(errors {sum(result['errors_total'].values())})"
                )
        return {"cases": cases}

    async def memory(self) -> dict[str, Any]:
        """Server RSS idle, and with N websockets each holding a subscription on a silent model."""
        app = await self.start_app()
        probe = self._probe(app)
        rss_fresh = app.rss()
        # Warm up both transports, so lazily built things (schema caches, pools) are in place.
        sse, graphql = self._app_endpoints()
        warm = LoopSettings(warmup=0.0, duration=1.0)
        for endpoint in (sse, graphql):
            meter = Meter(self.epoch)
            await closed_loop(
                endpoint,
                assign_lanes(self.accounts, 4),
                Directive("fast", tokens=50),
                meter,
                warm,
                probe,
                self.pinning,
            )
        await self.database.reset_messages()
        await settle(probe)
        rss_idle = await _median_rss(app, samples=5, interval=0.2)
        count = self.plan.memory_subscriptions
        meter = Meter(self.epoch)
        silent = Directive("silent", tokens=10)
        self.log(f"  opening {count} websockets, one silent subscription each")
        started = time.monotonic()
        sessions = await open_subscriptions(
            graphql, assign_lanes(self.accounts, count), silent, meter, concurrency=50
        )
        opening_seconds = round(time.monotonic() - started, 2)
        upstream_active = await _wait_for(
            lambda: self._silent_upstreams(), lambda n: n >= len(sessions), timeout=20
        )
        await asyncio.sleep(1.0)
        profiler = self._profiler(f"memory/graphql-{count}", app)
        if profiler is not None:
            await profiler[0].start(profiler[1], 2)
        rss_active = await _median_rss(app, samples=9, interval=0.25)
        process = psutil.Process(app.pid)
        open_files, threads = process.num_fds(), process.num_threads()
        profile = await profiler[0].finish() if profiler is not None else None
        close_sessions(sessions)
        upstream_after = await _wait_for(
            lambda: self._silent_upstreams(), lambda n: n == 0, timeout=20
        )
        await settle(probe)
        rss_after = await _median_rss(app, samples=5, interval=0.2)
        finish_reasons = await self.database.query(
            "SELECT finish_reason, count(*) AS n FROM messages WHERE role = 'assistant' "
            "GROUP BY finish_reason ORDER BY finish_reason"
        )
        opened = len(sessions)
        per_subscription = (rss_active - rss_idle) / opened if opened else None
        problems = []
        if opened < count or meter.errors:
            problems.append(f"{opened} of {count} subscriptions started")
        if upstream_active < opened:
            problems.append(f"only {upstream_active} were waiting on the upstream when measured")
        result = {
            "valid": not problems,
            "problems": problems,
            "subscriptions_requested": count,
            "subscriptions_open": opened,
            "opening_seconds": opening_seconds,
            "errors": dict(meter.errors),
            "rss_fresh_bytes": rss_fresh,
            "rss_idle_bytes": rss_idle,
            "rss_active_bytes": rss_active,
            "rss_after_close_bytes": rss_after,
            "bytes_per_subscription": round(per_subscription) if per_subscription else None,
            "server_open_files_active": open_files,
            "server_threads_active": threads,
            "upstream_silent_streams_seen": upstream_active,
            "upstream_silent_streams_after_close": upstream_after,
            "assistant_rows_by_finish_reason": {
                str(row["finish_reason"]): row["n"] for row in finish_reasons
            },
            "profile": profile,
        }
        if problems:
            self.log(f"  INVALID: {'; '.join(problems)}")
        self.log(
            f"  RSS idle {rss_idle / 2**20:.1f} MiB, with {opened} subscriptions "
            f"{rss_active / 2**20:.1f} MiB -> {(per_subscription or 0) / 1024:.1f} KiB each; "
            f"after closing {rss_after / 2**20:.1f} MiB"
        )
        return result

    async def _silent_upstreams(self) -> int:
        stats = await self._upstream_stats()
        return int(stats["active"]["silent"])


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.2f} ms"


async def _median_rss(service: Service, *, samples: int, interval: float) -> int:
    values = []
    for _ in range(samples):
        values.append(service.rss())
        await asyncio.sleep(interval)
    return int(statistics.median(values))


async def _wait_for(
    read: Callable[[], Awaitable[int]], done: Callable[[int], bool], *, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    value = await read()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        value = await read()
    return value


def conversations_for_user(index: int) -> int:
    """Low-numbered users serve the scenarios with few lanes, which stream the most replies each."""
    if index == 0:
        return 1024
    if index < 10:
        return 256
    if index < 100:
        return 64
    return 16


def _app_setting_names() -> set[str]:
    """Environment variables the API reads: not inherited from the caller's shell."""
    from app.config import Settings

    return {name.upper() for name in Settings.model_fields}
