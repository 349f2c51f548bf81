"""`results.json` -> the Markdown report and its plot (matplotlib, Agg backend).

Sections appear for the scenarios a run measured; the targets table compares with issue 7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * 1024

# Issue 7's targets.
SSE_RATIO = 0.5
GRAPHQL_RATIO = 0.3
CAPACITY = 200
TTFT_P50_SINGLE_MS = 5.0
TTFT_P99_LOADED_MS = 50.0
MEMORY_PER_SUBSCRIPTION = 100_000  # bytes ("100 KB")


def _cases(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    section = results.get("scenarios", {}).get(scenario) or {}
    cases: list[dict[str, Any]] = section.get("cases", [])
    return cases


def _case(results: dict[str, Any], scenario: str, name: str) -> dict[str, Any] | None:
    return next((c for c in _cases(results, scenario) if c["case"] == name), None)


def throughput_ratio(results: dict[str, Any], app: str, bare: str, concurrency: int) -> Any:
    """(app tokens per server CPU-s, bare events per server CPU-s, ratio) or None."""
    app_case = _case(results, "throughput", f"throughput/{app}-c{concurrency}")
    bare_case = _case(results, "throughput", f"throughput/{bare}-c{concurrency}")
    if not app_case or not bare_case:
        return None
    app_rate = app_case.get("tokens_per_server_cpu_second")
    bare_rate = bare_case.get("tokens_per_server_cpu_second")
    if not app_rate or not bare_rate:
        return None
    return app_rate, bare_rate, app_rate / bare_rate


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, measured: str, goal: str, met: bool | None, value: float | None) -> None:
        rows.append(
            {"target": name, "measured": measured, "goal": goal, "met": met, "value": value}
        )

    for app, bare, label, goal in (
        ("app-sse", "bare-sse", "SSE shim vs bare Starlette SSE", SSE_RATIO),
        ("app-graphql", "bare-ws", "GraphQL subscription vs bare websocket", GRAPHQL_RATIO),
    ):
        for concurrency in results.get("plan", {}).get("throughput_concurrency", []):
            ratio = throughput_ratio(results, app, bare, concurrency)
            if ratio is None:
                continue
            app_rate, bare_rate, value = ratio
            add(
                f"Throughput, {label}, {concurrency} stream{'s' if concurrency > 1 else ''}",
                f"{app_rate:,.0f} vs {bare_rate:,.0f} tokens per server CPU-s = {value:.2f}x",
                f">= {goal}x",
                value >= goal,
                round(value, 3),
            )
    capacity = results.get("scenarios", {}).get("capacity") or {}
    for transport in ("sse", "graphql"):
        found = capacity.get(transport)
        if not found:
            continue
        note = " (load side saturated)" if found.get("load_bound") else ""
        note += " (search cap reached)" if found.get("capped") else ""
        failed = [s for s in found["steps"] if s["streams"] == found.get("first_failure")]
        if failed:
            note += f"; {failed[0]['streams']} failed: {failed[0]['failure']}"
        add(
            f"Capacity, {'SSE' if transport == 'sse' else 'GraphQL'}, Groq-paced streams per core",
            f"{found['capacity']}{note}",
            f">= {CAPACITY}",
            found["capacity"] >= CAPACITY,
            found["capacity"],
        )
    for case in _cases(results, "overhead"):
        added = case.get("ttft", {}).get("added_ms") or {}
        transport = "SSE" if case["transport"] == "sse" else "GraphQL"
        failures = sum(case.get("errors_total", {}).values())
        if failures and not added:
            add(
                f"Added TTFT, {case['concurrency']} stream(s), {transport}",
                f"no reply succeeded ({failures} errors)",
                "-",
                False,
                None,
            )
            continue
        if case["concurrency"] == 1 and added.get("p50") is not None:
            add(
                f"Added TTFT p50, 1 stream, {transport}",
                f"{added['p50']:.2f} ms",
                f"<= {TTFT_P50_SINGLE_MS:g} ms",
                added["p50"] <= TTFT_P50_SINGLE_MS,
                added["p50"],
            )
        elif case["concurrency"] > 1 and added.get("p99") is not None:
            add(
                f"Added TTFT p99, {case['concurrency']} streams, {transport}",
                f"{added['p99']:.1f} ms",
                f"<= {TTFT_P99_LOADED_MS:g} ms",
                added["p99"] <= TTFT_P99_LOADED_MS,
                added["p99"],
            )
    memory = results.get("scenarios", {}).get("memory") or {}
    per = memory.get("bytes_per_subscription")
    if per is not None:
        valid = memory.get("valid", True)
        add(
            f"Memory per open subscription ({memory['subscriptions_open']} open)",
            f"{per / 1000:.1f} KB"
            + ("" if valid else f" (invalid: {'; '.join(memory.get('problems', []))})"),
            f"<= {MEMORY_PER_SUBSCRIPTION // 1000} KB",
            per <= MEMORY_PER_SUBSCRIPTION if valid else None,
            per,
        )
    return rows


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def write(results: dict[str, Any], markdown: Path, plot: Path) -> None:
    plotted = _plot(results, plot)
    markdown.write_text("\n".join(_markdown(results, plot.name if plotted else None)))


def _markdown(results: dict[str, Any], plot: str | None) -> list[str]:
    machine = results.get("machine", {})
    git = results.get("git", {})
    pinning = results.get("pinning", {})
    plan = results.get("plan", {})
    command = results.get("command", "python -m benchmarks.run")
    kind = "`make bench`" if "--docs" in command else "a partial run"
    changed = git.get("uncommitted_changes") or []
    commit = f"Commit `{(git.get('commit') or '?')[:12]}`" + (
        f" with uncommitted changes in {len(changed)} file(s) of app/, benchmarks/ or tests/fakes/."
        if changed
        else "."
    )
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` ({kind}) on {results.get('started_at', '?')}, in "
        f"{results.get('duration_seconds', 0):.0f} s, "
        f"{'quick plan' if plan.get('quick') else 'full plan'}. {commit}",
        "Every raw number is in [`benchmarks.json`](benchmarks.json); how each is measured is "
        "under [Method](#method). Rerun with `make bench`.",
        "",
    ]
    errors = {
        name: section["error"]
        for name, section in results.get("scenarios", {}).items()
        if isinstance(section, dict) and section.get("error")
    }
    if errors:
        lines += ["**Scenarios that failed to run:** " + ", ".join(errors) + " (see the JSON).", ""]
    rows = results.get("targets") or targets(results)
    if rows:
        lines += ["## Against the targets of issue 7", ""]
        lines += _table(
            ["target", "measured", "goal", "met"],
            [
                [
                    r["target"],
                    r["measured"],
                    r["goal"],
                    {True: "yes", False: "no"}.get(r["met"], "-"),
                ]
                for r in rows
            ],
        )
    if plot:
        lines += [f"![capacity, lag, throughput and added TTFT]({plot})", ""]
    lines += _machine_section(machine, pinning, results)
    lines += _throughput_section(results)
    lines += _capacity_section(results)
    lines += _overhead_section(results)
    lines += _memory_section(results)
    lines += _ceiling_section(results)
    lines += _method_section(results)
    return lines


def _machine_section(
    machine: dict[str, Any], pinning: dict[str, Any], results: dict[str, Any]
) -> list[str]:
    packages = machine.get("packages", {})
    uvicorn = machine.get("uvicorn", {})
    env = results.get("app_environment", {})
    lines = [
        "## Machine and setup",
        "",
        f"- {machine.get('cpu', '?')}, {machine.get('logical_cpus', '?')} logical CPUs "
        f"(usable {machine.get('usable_cpus')}), {machine.get('memory_bytes', 0) / 2**30:.0f} GiB, "
        f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}, "
        f"PostgreSQL {machine.get('postgresql', '?')} on the same machine.",
        "- Pinning: "
        + (
            f"server under test on core {pinning.get('server_cores')}, load generator, upstream "
            f"fake and py-spy on core {pinning.get('load_cores')}; PostgreSQL unpinned."
            if pinning.get("pinned")
            else "none (fewer than two usable cores, or --no-pin)."
        )
        + f" Benchmark processes at nice {pinning.get('nice')} (their session's scheduling "
        f"group at {pinning.get('autogroup_nice')}).",
        f"- Load average at start {machine.get('load_average_at_start')}, at end "
        f"{machine.get('load_average_at_end')}. {_noise(results)}",
        "- API: one `python -m app` process (uvicorn: "
        f"{uvicorn.get('http', '?').rsplit('.', 1)[-1]}, "
        f"{uvicorn.get('websockets', '?').rsplit('.', 1)[-1]}, {uvicorn.get('loop', '?')}), "
        "PostgreSQL as the application role (Row Level Security on), the fake Groq as upstream "
        "through the real `groq` SDK. Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in sorted(env.items()) if k not in ("DATA_DIR",))
        + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in packages.items()) + ".",
        "",
    ]
    return lines


def _windows(results: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = results.get("scenarios", {})
    windows = [c for name in ("ceiling", "throughput", "overhead") for c in _cases(results, name)]
    capacity = scenarios.get("capacity") or {}
    for transport in ("sse", "graphql"):
        windows += (capacity.get(transport) or {}).get("steps", [])
    return windows


def _noise(results: dict[str, Any]) -> str:
    """How much of the server core other processes took during the measurement windows."""
    others = sorted(
        max(0.0, w["cpu"]["server_core_busy"] - w["cpu"]["utilisation"].get("server", 0.0))
        for w in _windows(results)
        if w.get("cpu", {}).get("server_core_busy") is not None
    )
    if not others:
        return ""
    return (
        f"Other processes (PostgreSQL included) used {others[len(others) // 2]:.0%} of the "
        f"server's core in the median window, {others[-1]:.0%} at most; per-CPU-second figures "
        "do not depend on it, wall-clock rates and lags may."
    )


def _throughput_section(results: dict[str, Any]) -> list[str]:
    section = results.get("scenarios", {}).get("throughput")
    if not section or section.get("error"):
        return []
    lines = [
        "## Throughput (upstream as fast as possible)",
        "",
        f"Each reply is {section['tokens_per_reply']} tokens; every lane streams reply after "
        "reply. *Per server CPU-s* divides the tokens delivered in the window by the CPU time the "
        "server process used in it: the rate one fully used core would sustain. The bare "
        "endpoints send one event (frame) per token; the API may join tokens into one delta "
        "(*tokens/frame*).",
        "",
    ]
    rows = []
    for case in section["cases"]:
        name = case["endpoint"]
        ratio = None
        if name.startswith("app-"):
            bare = "bare-sse" if name == "app-sse" else "bare-ws"
            found = throughput_ratio(results, name, bare, case["concurrency"])
            ratio = found[2] if found else None
        rows.append(
            [
                name,
                str(case["concurrency"]),
                _n(case["tokens_per_second"]),
                _pct(case["cpu"]["utilisation"].get("server")),
                _n(case["tokens_per_server_cpu_second"]),
                "-" if ratio is None else f"{ratio:.2f}x",
                _n(case["tokens_per_frame"], 1),
                _n(case.get("server_cpu_ms_per_stream"), 2),
                _n(case["streams_ok"]),
                _n(case["errors"]),
                _pct(case["cpu"]["utilisation"].get("load")),
                _pct(case["cpu"].get("server_core_busy")),
            ]
        )
    lines += _table(
        [
            "endpoint",
            "streams",
            "tokens/s",
            "server CPU",
            "tokens per server CPU-s",
            "vs bare",
            "tokens/frame",
            "server CPU ms per reply",
            "replies in window",
            "errors",
            "load generator CPU",
            "server core busy (anything)",
        ],
        rows,
    )
    return lines


def _capacity_section(results: dict[str, Any]) -> list[str]:
    section = results.get("scenarios", {}).get("capacity")
    if not section or section.get("error"):
        return []
    directive = section["directive"]
    lines = [
        "## Capacity (Groq-paced streams)",
        "",
        f"Upstream: first token after {directive['ftd'] * 1000:.0f} ms, then "
        f"{1 / directive['interval']:.0f} tokens/s, {directive['tokens']}-token replies; each "
        "lane starts its next reply when the last one ends. A step passes when the p99 delivery "
        f"lag of all tokens in the window is under {section['lag_limit_ms']:.0f} ms"
        + (
            ", the first token's too: the p99 of the API's added time to first token (a server "
            "that starts replies late keeps the lag of the rest low, while fewer streams than "
            "the step's really run: see *streams running*),"
            if section.get("first_token_counts")
            else ""
        )
        + " and no reply failed (whole step, warm-up and drain included). The search doubles from "
        f"{results['plan']['capacity_start']} streams until a step fails (at most "
        f"{results['plan']['capacity_max']}), then bisects. *Streams running* is the token "
        "rate divided by one paced reply's (tokens over the upstream's reply duration).",
        "",
    ]
    for transport in ("sse", "graphql"):
        found = section.get(transport)
        if not found:
            continue
        lines += [
            f"**{'SSE' if transport == 'sse' else 'GraphQL (graphql-transport-ws)'}: "
            f"{found['capacity']} concurrent streams**"
            + (" (the load side was saturated near the limit)" if found.get("load_bound") else "")
            + ".",
            "",
        ]
        rows = []
        for step in sorted(found["steps"], key=lambda s: s["streams"]):
            lag = step["lag"]
            ttft = step.get("ttft", {}).get("added_ms") or {}
            rows.append(
                [
                    str(step["streams"]),
                    "pass" if step["passed"] else "FAIL",
                    _n(lag.get("p50_ms"), 1),
                    _n(lag.get("p99_ms"), 1),
                    _n(lag.get("max_ms"), 1),
                    _n(step["tokens_per_second"]),
                    _n(step.get("effective_streams"), 1),
                    _n(step["tokens_per_frame"], 1),
                    _pct(step["cpu"]["utilisation"].get("server")),
                    _n(ttft.get("p50"), 1),
                    _n(ttft.get("p99"), 1),
                    _n((step.get("upstream") or {}).get("schedule_lag_ms", {}).get("p99")),
                    _n(step.get("load_loop_delay_ms", {}).get("p99"), 1),
                    step.get("failure") or "",
                ]
            )
        lines += _table(
            [
                "streams",
                "",
                "lag p50 ms",
                "lag p99 ms",
                "lag max ms",
                "tokens/s",
                "streams running",
                "tokens/frame",
                "server CPU",
                "added TTFT p50 ms",
                "added TTFT p99 ms",
                "upstream late p99 ms",
                "load loop delay p99 ms",
                "why it failed",
            ],
            rows,
        )
    return lines


def _overhead_section(results: dict[str, Any]) -> list[str]:
    cases = _cases(results, "overhead")
    if not cases:
        return []
    plan = results["plan"]
    single, paced = plan["overhead_single"], plan["paced"]
    lines = [
        "## Added time to first token",
        "",
        "Added = client-observed time to the first token minus the upstream's own (its first "
        "token's send time minus the time it received the request, both stamped into the token "
        "by the fake). It splits into *before upstream* (request sent -> the fake has the "
        "request: auth, ownership check, storing the user message and the assistant row, "
        "building the prompt, the SDK call) and *after* (the fake sent the token -> the client "
        "has it). "
        f"1 stream: {single['tokens']}-token replies after {single['ftd'] * 1000:.0f} ms, back to "
        f"back; {plan['overhead_concurrency']} streams: the capacity scenario's replies "
        f"({paced['tokens']} tokens at {1 / paced['interval']:.0f}/s).",
        "",
    ]
    rows = []
    for case in cases:
        ttft = case["ttft"]
        added = ttft.get("added_ms") or {}
        before = ttft.get("before_upstream_ms") or {}
        after = ttft.get("after_upstream_ms") or {}
        client = ttft.get("client_ttft_ms") or {}
        rows.append(
            [
                "SSE" if case["transport"] == "sse" else "GraphQL",
                str(case["concurrency"]),
                _n(ttft.get("samples")),
                _n(added.get("p50"), 2),
                _n(added.get("p90"), 2),
                _n(added.get("p99"), 2),
                _n(before.get("p50"), 2),
                _n(before.get("p99"), 2),
                _n(after.get("p50"), 2),
                _n(after.get("p99"), 2),
                _n(client.get("p50"), 1),
                _pct(case["cpu"]["utilisation"].get("server")),
                _n(sum(case.get("errors_total", {}).values())),
            ]
        )
    lines += _table(
        [
            "transport",
            "streams",
            "replies",
            "added p50 ms",
            "p90",
            "p99",
            "before upstream p50",
            "p99",
            "after upstream p50",
            "p99",
            "client TTFT p50",
            "server CPU",
            "errors",
        ],
        rows,
    )
    return lines


def _memory_section(results: dict[str, Any]) -> list[str]:
    memory = results.get("scenarios", {}).get("memory")
    if not memory or memory.get("error"):
        return []
    per = memory.get("bytes_per_subscription") or 0
    invalid = (
        [f"**Not a valid measurement:** {'; '.join(memory['problems'])}.", ""]
        if not memory.get("valid", True)
        else []
    )
    return [
        "## Memory",
        "",
        *invalid,
        f"A fresh server, warmed up with a few replies on both transports, then "
        f"{memory['subscriptions_open']} of {memory['subscriptions_requested']} websockets "
        "opened, each authenticated and holding one `streamMessage` subscription whose upstream "
        "answered with headers and then nothing (silent model). RSS is the median of several "
        "samples.",
        "",
        *_table(
            ["state", "RSS"],
            [
                ["just started", f"{memory['rss_fresh_bytes'] / MIB:.1f} MiB"],
                ["idle after warm-up", f"{memory['rss_idle_bytes'] / MIB:.1f} MiB"],
                [
                    f"{memory['subscriptions_open']} subscriptions open",
                    f"{memory['rss_active_bytes'] / MIB:.1f} MiB",
                ],
                ["all closed again", f"{memory['rss_after_close_bytes'] / MIB:.1f} MiB"],
                ["**per open subscription**", f"**{per / KIB:.1f} KiB** ({per / 1000:.1f} KB)"],
            ],
        ),
        f"Opening them took {memory['opening_seconds']} s; the server then held "
        f"{memory['server_open_files_active']} file descriptors; after closing, the assistant "
        f"rows were finalised as {memory['assistant_rows_by_finish_reason']}.",
        "",
    ]


def _ceiling_section(results: dict[str, Any]) -> list[str]:
    cases = _cases(results, "ceiling")
    if not cases:
        return []
    bare = {
        "sse": max(
            (c["tokens_per_server_cpu_second"] or 0)
            for c in _cases(results, "throughput")
            if c["endpoint"] == "bare-sse"
        )
        if _cases(results, "throughput")
        else None,
        "ws": max(
            (c["tokens_per_server_cpu_second"] or 0)
            for c in _cases(results, "throughput")
            if c["endpoint"] == "bare-ws"
        )
        if _cases(results, "throughput")
        else None,
    }
    lines = [
        "## Load generator ceiling",
        "",
        "The same clients against `benchmarks/replay.py`, a server that writes precomputed events "
        "(one write per event, like a real server) and so costs almost nothing: the load "
        "generator is the bottleneck. *Per load CPU-s* is what one core of load generation "
        "reads; *headroom* divides it by the fastest bare endpoint's events per server CPU-s. "
        "Lag parsing (capacity and overhead scenarios) reads every token's timestamp.",
        "",
    ]
    rows = []
    for case in cases:
        transport = "sse" if case["endpoint"].endswith("sse") else "ws"
        per_cpu = case.get("tokens_per_load_cpu_second")
        reference = bare.get(transport)
        rows.append(
            [
                transport.upper() if transport == "sse" else "websocket",
                str(case["concurrency"]),
                "yes" if case.get("parses_lag") else "no",
                _n(case["tokens_per_second"]),
                _pct(case["cpu"]["utilisation"].get("load")),
                _n(per_cpu),
                f"{per_cpu / reference:.1f}x" if per_cpu and reference else "-",
            ]
        )
    lines += _table(
        [
            "transport",
            "connections",
            "parses lag",
            "events/s",
            "load process CPU",
            "events per load CPU-s",
            "headroom vs bare",
        ],
        rows,
    )
    paced = (results.get("scenarios", {}).get("ceiling") or {}).get("paced") or []
    if paced:
        lines += [
            "Groq-paced streams straight from the fake to the client (no server): the delivery "
            "lag the load side adds by itself when it produces and reads that many streams on "
            "its one core.",
            "",
            *_table(
                ["streams", "lag p50 ms", "lag p99 ms", "lag max ms", "tokens/s", "load core used"],
                [
                    [
                        str(case["streams"]),
                        _n(case["lag"].get("p50_ms"), 1),
                        _n(case["lag"].get("p99_ms"), 1),
                        _n(case["lag"].get("max_ms"), 1),
                        _n(case["tokens_per_second"]),
                        _pct(case["cpu"].get("load_core_ours")),
                    ]
                    for case in paced
                ],
            ),
        ]
    return lines


def _method_section(results: dict[str, Any]) -> list[str]:
    return [
        "## Method",
        "",
        "- **Processes.** `benchmarks/run.py` creates a PostgreSQL database, migrates it with "
        "Alembic as the owner and starts, as separate processes: the API (`python -m app`, "
        "connecting as the application role), the bare reference (`benchmarks/reference.py`: "
        "a Starlette `StreamingResponse` and a Starlette websocket, served by uvicorn with the "
        "API's options), and the upstream (`benchmarks/upstream.py`, the test suite's fake Groq "
        "with timestamped tokens and a shared pacer). Each API scenario gets a fresh API "
        "process; conversations are emptied before every measurement so prompts stay small.",
        "- **Cores.** The server under test is pinned alone to one core; the load generator, "
        "the fake and py-spy share the other. CPU is read from `/proc` (psutil) at both ends of "
        "each window: server, load generator, fake, PostgreSQL backends of the benchmark "
        "database, and each core's total busy time (so other work on the machine is visible).",
        "- **Load.** Closed loop: each lane (one keep-alive HTTP connection or one websocket, "
        "one user, its own conversations) starts a reply as soon as the previous one ended; at "
        "most two lanes per user (`USER_MAX_CONCURRENT_STREAMS` stays at its default). Lanes "
        "start staggered; numbers are taken over a fixed window after a warm-up, never over "
        "ramp-up or drain.",
        "- **Counting tokens.** Every upstream token is `~<send time in µs, hex> `. Clients "
        "(`benchmarks/clients.py`, raw asyncio protocols) count `~` bytes and never decode "
        "delta events; a reply counts as successful only if it ended with `message_stop` and "
        "exactly the tokens the fake sent arrived. Tokens that the API joins into one delta are "
        "all counted.",
        "- **Lag.** For every token: the time the client read it minus the send time written in "
        "it by the fake (`time.time()` on the same host: one clock, no estimate). The fake "
        "writes, per stream, all tokens due at each 2 ms tick; how late its writes were against "
        "the schedule is reported (*upstream late*), and so is the load process's own event "
        "loop delay, which bounds how much of a lag is the client's.",
        "- **The load side's own limits** are measured in the same run: the clients against "
        "a server that costs nothing (events per load CPU-second), and paced streams straight "
        "from the fake to the client (the lag the load side adds). Every window also records "
        "the CPU the load side used; above 90% of its core a result is marked `load_bound`.",
        "- **Ratios.** The API and the bare endpoints are compared per server CPU-second, which "
        "does not depend on how busy the rest of the machine was; tokens/s (wall) are reported "
        "too.",
        "- **Profiles.** `python -m benchmarks.run --only throughput --quick --profile "
        "'throughput/app-*'` records the server with py-spy during the matching windows into "
        "`benchmarks/.results/<run>/profiles/` (flame graph SVG; `--profile-format speedscope`).",
        "",
    ]


def _plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = results.get("scenarios", {})
    capacity = scenarios.get("capacity") or {}
    has_capacity = any(capacity.get(t) for t in ("sse", "graphql"))
    has_throughput = bool(_cases(results, "throughput"))
    has_overhead = bool(_cases(results, "overhead"))
    panels = [p for p, shown in (("capacity", has_capacity), ("throughput", has_throughput),
                                 ("ttft", has_overhead)) if shown]  # fmt: skip
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    colours = {"sse": "tab:blue", "graphql": "tab:orange"}
    for axis, panel in zip(axes[0], panels, strict=True):
        if panel == "capacity":
            for transport in ("sse", "graphql"):
                found = capacity.get(transport)
                if not found:
                    continue
                steps = sorted(found["steps"], key=lambda s: s["streams"])
                x = [s["streams"] for s in steps]
                label = "SSE" if transport == "sse" else "GraphQL"
                colour = colours[transport]
                axis.plot(x, [s["lag"].get("p99_ms") for s in steps], "o-", color=colour,
                          label=f"{label} p99 (capacity {found['capacity']})")  # fmt: skip
                axis.plot(x, [s["lag"].get("p50_ms") for s in steps], "s--", color=colour,
                          alpha=0.6, label=f"{label} p50")  # fmt: skip
                first = [((s.get("ttft") or {}).get("added_ms") or {}).get("p99") for s in steps]
                axis.plot(x, first, "^:", color=colour, alpha=0.8,
                          label=f"{label} first-token delay p99")  # fmt: skip
                failed = [s for s in steps if not s["passed"]]
                axis.scatter([s["streams"] for s in failed],
                             [_worst(s) for s in failed],
                             marker="x", s=80, color="red", zorder=5)  # fmt: skip
            axis.axhline(capacity.get("lag_limit_ms", 100), color="grey", linestyle=":")
            axis.axvline(CAPACITY, color="green", linestyle=":", label=f"target {CAPACITY}")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("concurrent Groq-paced streams")
            axis.set_ylabel("ms")
            axis.set_title("Capacity: token lag and first-token delay (x = failed step)")
            axis.legend(fontsize=8)
        elif panel == "throughput":
            cases = _cases(results, "throughput")
            concurrencies = sorted({c["concurrency"] for c in cases})
            names = ["bare-sse", "app-sse", "bare-ws", "app-graphql"]
            width = 0.8 / len(concurrencies)
            for index, concurrency in enumerate(concurrencies):
                values = []
                for name in names:
                    case = _case(results, "throughput", f"throughput/{name}-c{concurrency}")
                    values.append((case or {}).get("tokens_per_server_cpu_second") or 0)
                positions = [i + index * width for i in range(len(names))]
                axis.bar(positions, values, width, label=f"{concurrency} stream(s)")
            axis.set_xticks([i + width * (len(concurrencies) - 1) / 2 for i in range(len(names))])
            axis.set_xticklabels(names)
            axis.set_ylabel("tokens per server CPU-second")
            axis.set_title("Throughput, upstream as fast as possible")
            axis.legend(fontsize=8)
        else:
            for case in _cases(results, "overhead"):
                raw = sorted(case["ttft"].get("added_ms_raw") or [])
                if not raw:
                    continue
                label = (
                    f"{'SSE' if case['transport'] == 'sse' else 'GraphQL'}, {case['concurrency']}"
                )
                axis.plot(raw, [(i + 1) / len(raw) for i in range(len(raw))], label=label)
            axis.axvline(TTFT_P50_SINGLE_MS, color="green", linestyle=":", label="5 ms")
            axis.axvline(TTFT_P99_LOADED_MS, color="grey", linestyle=":", label="50 ms")
            axis.set_xscale("log")
            axis.set_xlabel("added time to first token (ms)")
            axis.set_ylabel("fraction of replies")
            axis.set_title("Added TTFT (CDF)")
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _worst(step: dict[str, Any]) -> float:
    """Where a failed capacity step is marked: its worse p99, token lag or first-token delay."""
    first = ((step.get("ttft") or {}).get("added_ms") or {}).get("p99") or 0.0
    return max(step["lag"].get("p99_ms") or 0.0, first, 0.1)
