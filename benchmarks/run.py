#!/usr/bin/env python3
"""Side-by-side per-request cost of coatcheck's session layer and other session libraries.

    pip install -r benchmarks/requirements.txt   # into the venv that has coatcheck installed
    python benchmarks/run.py [--output benchmarks/results/latest.md]

Everything runs in this one process (the Node anchors in one child process), on the same
machine, in interleaved rounds, and the table reports each library's overhead over its bare
framework as a ratio to coatcheck on the comparable back-end. See README.md for what each
scenario measures and the caveats. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    AsyncRequest,
    BenchError,
    Jar,
    Stats,
    SyncRequest,
    ThrowawayRedis,
    time_async,
    time_sync,
)
from _targets import NOTES, SCENARIOS, Target, build_targets

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
PACKAGES = (
    "coatcheck",
    "starlette",
    "starsessions",
    "Flask",
    "Flask-Session",
    "Werkzeug",
    "Django",
    "redis",
    "SQLAlchemy",
    "aiosqlite",
)
BASELINE = "(no sessions)"
BASELINE_SHARE = 0.5
"""A baseline batch lasts this fraction of the session batch it is paired with."""
FAMILIES = {
    "memory": "in-process",
    "cookie": "cookie, no store",
    "sqlite": "SQLite",
    "redis": "Redis",
}


@dataclass
class Cell:
    """One target on one scenario: its visitor's cookie jar, batch size and measurements."""

    target: Target
    scenario: str
    jar: Jar | None
    n: int = 1
    stats: Stats = field(default_factory=Stats)


@dataclass
class Row:
    """One line of the report (Python or Node)."""

    library: str
    backend: str
    family: str
    framework: str
    scenario: str
    stats: Stats
    runtime: str = "Python"


class Runner:
    def __init__(self, loop: asyncio.Runner) -> None:
        self.loop = loop

    def run(self, cell: Cell, n: int) -> float:
        """Run ``n`` requests of ``cell``; µs per request."""
        path = "/" + cell.scenario
        target = cell.target
        if target.is_async:
            request = cast(AsyncRequest, target.request)
            elapsed, errors = self.loop.run(time_async(request, path, cell.jar, n))
        else:
            elapsed, errors = time_sync(cast(SyncRequest, target.request), path, cell.jar, n)
        if errors:
            raise BenchError(
                f"{target.label} /{cell.scenario}: {errors} of {n} responses were not 200"
            )
        return elapsed / n / 1000

    def seed(self, target: Target) -> Jar:
        """A visitor signed in as user 42 with a 5-item cart, through the app itself."""
        jar = Jar()
        if target.is_async:
            status, set_cookies = self.loop.run(cast(AsyncRequest, target.request)("/seed", ""))
        else:
            status, set_cookies = cast(SyncRequest, target.request)("/seed", "")
        jar.update(set_cookies)
        if status != 200 or not jar.cookies:
            raise BenchError(f"{target.label}: seeding a session failed (status {status})")
        return jar


def make_cells(runner: Runner, targets: list[Target]) -> list[Cell]:
    cells = []
    for target in targets:
        for scenario in target.scenarios:
            jar = None if scenario == "anon" else runner.seed(target)
            cells.append(Cell(target, scenario, jar))
    return cells


def calibrate(runner: Runner, cell: Cell, warmup_s: float, batch_s: float) -> None:
    """Warm the cell up for ``warmup_s`` and size its batches to last about ``batch_s``."""
    n, spent = 8, 0.0
    per_request = 0.0
    while spent < warmup_s:
        per_request = runner.run(cell, n)
        spent += per_request * n / 1e6
        n = min(n * 2, 100_000)
    cell.n = max(5, min(100_000, round(batch_s * 1e6 / per_request)))


def measure(
    runner: Runner, cells: list[Cell], rounds: int, budget_s: float, warmup_s: float
) -> None:
    """Time every session cell in shuffled rounds, each batch paired with a baseline batch.

    The bare framework runs right before (even rounds) or right after (odd rounds) each session
    batch, so the overhead of every batch is taken against the machine's load of that moment.
    """
    baselines = {c.target.framework: c for c in cells if c.target.library == BASELINE}
    timed = [c for c in cells if c.target.library != BASELINE]
    batch_s = budget_s / (len(timed) * rounds * (1 + BASELINE_SHARE))
    for cell in timed:
        calibrate(runner, cell, warmup_s, batch_s)
    for base in baselines.values():
        calibrate(runner, base, warmup_s, batch_s * BASELINE_SHARE)
    gc.collect()
    gc.freeze()  # set-up objects need not be traversed by every collection that follows
    shuffle = random.Random(20240601)
    for round_no in range(rounds):
        order = list(timed)
        shuffle.shuffle(order)
        for cell in order:
            base = baselines[cell.target.framework]
            if round_no % 2:
                sample = runner.run(cell, cell.n)
                base_sample = runner.run(base, base.n)
            else:
                base_sample = runner.run(base, base.n)
                sample = runner.run(cell, cell.n)
            cell.stats.add(sample, cell.n)
            base.stats.add(base_sample, base.n)
            cell.stats.overheads.append(sample - base_sample)
        print(f"  round {round_no + 1}/{rounds} done", file=sys.stderr)


# -- Redis round trips --------------------------------------------------------------------------


class RoundTrips:
    """Counts client → server round trips of redis-py (sync and asyncio) while installed.

    A round trip is one ``send_packed_command``: a single command, or a whole pipeline.
    """

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        import redis.asyncio.connection as async_connection
        import redis.connection as sync_connection

        sync_original = sync_connection.AbstractConnection.send_packed_command
        async_original = async_connection.AbstractConnection.send_packed_command

        def sync_send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return sync_original(conn, *args, **kwargs)

        async def async_send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await async_original(conn, *args, **kwargs)

        sync_connection.AbstractConnection.send_packed_command = sync_send
        async_connection.AbstractConnection.send_packed_command = async_send
        try:
            yield
        finally:
            sync_connection.AbstractConnection.send_packed_command = sync_original
            async_connection.AbstractConnection.send_packed_command = async_original


def command_stats(client: Any) -> Counter[str]:
    raw = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in raw.items()})


@dataclass
class RedisCount:
    library: str
    backend: str
    scenario: str
    round_trips: float
    commands: dict[str, float] | None


def count_redis(
    runner: Runner, targets: list[Target], redis_url: str, server_stats: bool, n: int = 200
) -> list[RedisCount]:
    """Round trips (client side) and commands (``INFO commandstats`` deltas) per request."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    counter = RoundTrips()
    results = []
    try:
        with counter.installed():
            for target in targets:
                if not target.uses_redis:
                    continue
                for scenario in target.scenarios:
                    cell = Cell(
                        target, scenario, None if scenario == "anon" else runner.seed(target)
                    )
                    runner.run(cell, 20)  # connections open, caches warm
                    before_stats = command_stats(admin) if server_stats else Counter()
                    before = counter.count
                    runner.run(cell, n)
                    trips = (counter.count - before) / n
                    commands = None
                    if server_stats:
                        delta = command_stats(admin)
                        delta.subtract(before_stats)
                        delta.pop("info", None)
                        commands = {k: v / n for k, v in sorted(delta.items()) if v > 0}
                    results.append(
                        RedisCount(target.library, target.backend, scenario, trips, commands)
                    )
    finally:
        admin.close()
    return results


def delete_keys(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()


# -- Node anchors -------------------------------------------------------------------------------


def run_node(
    redis_url: str | None, prefix: str, budget_s: float, rounds: int, server_stats: bool
) -> tuple[list[Row], list[dict[str, Any]], dict[str, str], str | None]:
    """Run ``node/bench.mjs``; its rows, Redis command counts, versions, or why it did not run."""
    node = shutil.which("node")
    if node is None:
        return [], [], {}, "Node anchors: `node` is not on PATH"
    if not (NODE_DIR / "node_modules").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            return [], [], {}, "Node anchors: node_modules missing and `npm` is not on PATH"
        print("installing the Node anchors' pinned packages (npm ci) ...", file=sys.stderr)
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=False
        )
        if installed.returncode != 0:
            return [], [], {}, "Node anchors: `npm ci` failed in benchmarks/node"
    env = dict(os.environ)
    env.update(
        BENCH_REDIS_URL=redis_url or "",
        BENCH_PREFIX=prefix,
        BENCH_BUDGET_S=str(budget_s),
        BENCH_ROUNDS=str(rounds),
        BENCH_SERVER_STATS="1" if server_stats else "",
    )
    done = subprocess.run(
        [node, "--no-deprecation", str(NODE_DIR / "bench.mjs")],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return [], [], {}, f"Node anchors: bench.mjs exited with {done.returncode}"
    report = json.loads(done.stdout)
    rows = [
        Row(
            r["library"],
            r["backend"],
            r["family"],
            "express",
            r["scenario"],
            Stats(r["samples"], r.get("overheads", []), r["requests"]),
            runtime="Node",
        )
        for r in report["results"]
    ]
    return rows, report.get("redis", []), report.get("versions", {}), report.get("skipped")


# -- report -------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


class Report:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.base = {r.framework: r.stats.median for r in rows if r.library == BASELINE}
        self.coatcheck = {
            (r.family, r.scenario): self.overhead(r) for r in rows if r.library == "coatcheck"
        }

    def overhead(self, row: Row) -> float:
        if row.stats.overheads:
            return statistics.median(row.stats.overheads)
        return row.stats.median - self.base.get(row.framework, 0.0)

    def cost(self, row: Row) -> str:
        overhead = self.overhead(row)
        return "≈0 µs" if overhead < 0.5 else f"{_fmt(overhead)} µs"

    def ratio(self, row: Row) -> str:
        mine = self.overhead(row)
        theirs = self.coatcheck.get((row.family, row.scenario))
        if theirs is None:
            return "-"
        if theirs < 1.0 or mine < 0.5:
            return "≈0"  # both within noise of the bare framework: a ratio would mean nothing
        return f"{mine / theirs:.2f}x"

    def headline(self) -> list[str]:
        lines = [
            "| back-end class | library (back-end) | " + " | ".join(SCENARIOS) + " |",
            "|---|---|" + "---:|" * len(SCENARIOS),
        ]
        keyed: dict[tuple[str, str, str, str], dict[str, Row]] = {}
        for row in self.rows:
            if row.library == BASELINE:
                continue
            keyed.setdefault((row.family, row.runtime, row.library, row.backend), {})[
                row.scenario
            ] = row

        def sort_key(item: tuple[tuple[str, str, str, str], dict[str, Row]]) -> tuple[Any, ...]:
            family, runtime, library, backend = item[0]
            coatcheck_first = library != "coatcheck"
            return (
                list(FAMILIES).index(family),
                runtime != "Python",
                coatcheck_first,
                library,
                backend,
            )

        for (family, runtime, library, backend), by_scenario in sorted(keyed.items(), key=sort_key):
            name = (
                f"**{library}** ({backend})" if library == "coatcheck" else f"{library} ({backend})"
            )
            if runtime != "Python":
                name += f" [{runtime}]"
            cells = []
            for scenario in SCENARIOS:
                found = by_scenario.get(scenario)
                if found is None:
                    cells.append("n/a")
                elif library == "coatcheck":
                    cells.append(self.cost(found))
                else:
                    cells.append(f"{self.cost(found)} · {self.ratio(found)}")
            lines.append(f"| {FAMILIES[family]} | {name} | " + " | ".join(cells) + " |")
        return lines

    def full(self) -> list[str]:
        lines = [
            "| runtime | library | back-end | scenario | median µs | p90 µs | overhead µs "
            "| vs coatcheck | requests |",
            "|---|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            overhead = "-" if row.library == BASELINE else _fmt(self.overhead(row))
            ratio = "-" if row.library in (BASELINE, "coatcheck") else self.ratio(row)
            lines.append(
                f"| {row.runtime} | {row.library} | {row.backend} | {row.scenario} "
                f"| {_fmt(row.stats.median)} | {_fmt(row.stats.p90)} | {overhead} | {ratio} "
                f"| {row.stats.requests} |"
            )
        return lines


def redis_lines(counts: list[RedisCount], node_counts: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| library | scenario | round trips / request "
        "| commands / request (server `INFO commandstats`) |",
        "|---|---|---:|---|",
    ]
    for c in counts:
        commands = (
            "-"
            if c.commands is None
            else ", ".join(f"{k} {v:.2g}" for k, v in c.commands.items()) or "none"
        )
        lines.append(
            f"| {c.library} ({c.backend}) | {c.scenario} | {c.round_trips:.2f} | {commands} |"
        )
    for node in node_counts:
        commands = ", ".join(f"{k} {v:.2g}" for k, v in node["commands"].items()) or "none"
        lines.append(
            f"| {node['library']} ({node['backend']}) [Node] | {node['scenario']} "
            f"| - | {commands} |"
        )
    return lines


def render(
    report: Report,
    counts: list[RedisCount],
    node_counts: list[dict[str, Any]],
    found: dict[str, str],
    node_versions: dict[str, str],
    skipped: list[str],
    command: str,
    started: datetime,
    elapsed: float,
    redis_note: str,
    load: tuple[float, float],
) -> str:
    out = [
        "# coatcheck session benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s on {cpu_model()} "
        f"({os.cpu_count()} CPUs), {platform.system()} {platform.release()}; 1-minute load average "
        f"{load[0]:.2f} at the start, {load[1]:.2f} at the end. Command:",
        "",
        "```sh",
        command,
        "```",
        "",
        "## Session-layer overhead per request",
        "",
        "Median µs per request above the same framework with no sessions (each batch minus the "
        "bare-framework batch run right next to it), and the ratio to coatcheck on the "
        "comparable back-end (**2.00x = twice coatcheck's cost; below 1 = "
        "cheaper than coatcheck**). `≈0`: both are within noise of the bare framework. `n/a`: the "
        "library has no session id to regenerate (a signed or sealed cookie).",
        "",
        *report.headline(),
        "",
        "## Redis round trips per request",
        "",
        redis_note,
        "",
        *redis_lines(counts, node_counts),
        "",
        "## Every measurement",
        "",
        "Median and p90 are over the per-request means of repeated batches (each batch: hundreds "
        "to thousands of requests; batches of all cells interleaved in shuffled rounds). "
        "`(no sessions)` rows are the bare framework; overhead is the median of the paired "
        "differences (each session batch minus the bare batch run right before or after it).",
        "",
        *report.full(),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in found.items()),
    ]
    if node_versions:
        out += ["", "Node anchors: " + ", ".join(f"{k} {v}" for k, v in node_versions.items())]
    out += ["", "## Configuration and deviations", ""]
    out += [f"- {note}" for note in NOTES]
    if skipped:
        out += ["", "## Not measured in this run", ""]
        out += [f"- {line}" for line in skipped]
    return "\n".join(out) + "\n"


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget", type=float, default=80.0, help="seconds of timed Python batches (default 80)"
    )
    parser.add_argument(
        "--node-budget", type=float, default=25.0, help="seconds of timed Node batches (default 25)"
    )
    parser.add_argument(
        "--rounds", type=int, default=15, help="interleaved rounds = batches per cell (default 15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.15, help="warm-up seconds per cell (default 0.15)"
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis server instead of starting a throwaway redis-server (keys get a "
        "random prefix and are deleted afterwards; server command counts are then not reported)",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip every Redis back-end")
    parser.add_argument("--no-node", action="store_true", help="skip the Node anchors")
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run (numbers not meaningful)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.node_budget, args.rounds, args.warmup = 5.0, 3.0, 3, 0.02
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    clock = time.monotonic()
    load_at_start = os.getloadavg()[0]
    prefix = f"bench:{secrets.token_hex(6)}:"
    skipped: list[str] = []

    server: ThrowawayRedis | None = None
    redis_url: str | None = None
    server_stats = False
    if args.no_redis:
        skipped.append("all Redis back-ends: --no-redis")
    elif args.redis_url:
        redis_url = args.redis_url
    elif (executable := shutil.which("redis-server")) is not None:
        server = ThrowawayRedis(executable)
        redis_url, server_stats = server.url, True
    else:
        skipped.append("all Redis back-ends: no redis-server on PATH and no --redis-url")

    workdir = Path(tempfile.mkdtemp(prefix="coatcheck-bench-"))
    loop = asyncio.Runner()
    targets: list[Target] = []
    try:
        targets, not_built = build_targets(workdir, redis_url, prefix)
        skipped += not_built
        runner = Runner(loop)
        cells = make_cells(runner, targets)
        print(f"timing {len(cells)} cells x {args.rounds} rounds ...", file=sys.stderr)
        measure(runner, cells, args.rounds, args.budget, args.warmup)
        counts: list[RedisCount] = []
        if redis_url is not None:
            counts = count_redis(runner, targets, redis_url, server_stats)
        rows = [
            Row(
                c.target.library,
                c.target.backend,
                c.target.family,
                c.target.framework,
                c.scenario,
                c.stats,
            )
            for c in cells
        ]
        node_counts: list[dict[str, Any]] = []
        node_versions: dict[str, str] = {}
        if args.no_node:
            skipped.append("Node anchors: --no-node")
        else:
            node_rows, node_counts, node_versions, why_not = run_node(
                redis_url, prefix, args.node_budget, args.rounds, server_stats
            )
            rows += node_rows
            if why_not:
                skipped.append(why_not)
    finally:
        for target in targets:
            for close in target.closers:
                result = close()
                if asyncio.iscoroutine(result):
                    loop.run(result)
        loop.close()
        if redis_url is not None:
            delete_keys(redis_url, prefix)
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    redis_note = (
        "Round trips are counted in redis-py (one `send_packed_command` = one command or one "
        "pipeline); commands are `INFO commandstats` deltas on a throwaway `redis-server` this run "
        "started (a Lua script counts as `evalsha` plus the commands it runs)."
        if server_stats
        else "Round trips are counted in redis-py (one `send_packed_command` = one command or one "
        "pipeline); server command counts need the throwaway server (run without --redis-url)."
    )
    command = "python benchmarks/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    text = render(
        Report(rows),
        counts,
        node_counts,
        versions(),
        node_versions,
        skipped,
        command.strip(),
        started,
        time.monotonic() - clock,
        redis_note,
        (load_at_start, os.getloadavg()[0]),
    )
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
