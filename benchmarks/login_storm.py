#!/usr/bin/env python3
"""Do logins starve reads? The demo's ``GET /api/me`` latency, quiet and during a login storm.

    python benchmarks/login_storm.py [--store LABEL=URL ...] [--logins 50] [--rounds 3]

For each store, the real ``coatcheck demo`` runs as its own process (uvicorn, 1 worker) on a
fresh data folder. One user registers and keeps its cookie; ``--logins`` more accounts are
registered for the storm. Then, in each round:

- **quiet**: ``wrk -t1 -c8`` on ``GET /api/me`` with the one signed-in cookie;
- **storm**: the same wrk run while ``--logins`` clients, each from its own loopback address
  (127.0.0.10, 127.0.0.11 ...) and with its own account, log in over and over: as soon as one
  login answers, that client sends the next, so ``--logins`` password checks are always queued
  or hashing (argon2id) for the whole wrk run. Distinct addresses and accounts keep the demo's
  login throttle (30 attempts per address, 5 failures per account per 15 min) out of the way.

It reports wrk's p50/p99 and req/s for both, and the logins completed per second during the
storm with their own latency.

``--variant LABEL:NAME=VALUE,...`` compares settings side by side: each variant gets its own
demo (through ``_demo_launcher.py``, which builds the demo's hasher with those
:class:`~coatcheck.passwords.PasswordConfig` settings), and every round runs every variant, so
they meet the same background load. For example, before and after issue 9 (the hashing
threads at the process's priority, then the default ``pool_nice``):

    python benchmarks/login_storm.py --variant 'before:pool_nice=0' --variant 'after:'

Nothing here asserts on a time; this is not part of the test command.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import BenchError, ThrowawayRedis, free_port  # noqa: E402
from sockets import Sample, cpu_model, ensure_wrk, run_wrk  # noqa: E402

PASSWORD = "correct horse battery staple"
SECRET = "login-storm-secret-0123456789-abcdefghij"
DEFAULT_STORES = (
    "SQLite=sqlite:///{workdir}/sessions-{variant}.db",
    "Redis=redis://{redis}/0?prefix=storm{variant}:",
)
FIRST_ADDRESS = 10  # storm clients use 127.0.0.10, 127.0.0.11, ...


class Demo:
    """``coatcheck demo`` in a child process on a free port."""

    def __init__(self, store_url: str, data_dir: Path, options: list[str]) -> None:
        self.port = free_port()
        self.log_path = data_dir / "demo.log"
        command = [sys.executable, str(HERE / "_demo_launcher.py")]
        for option in options:
            command += ["--password-option", option]
        command += [
            "--",
            "--data-dir",
            str(data_dir),
            "demo",
            "--store",
            store_url,
            "--port",
            str(self.port),
            "--secret",
            SECRET,
            "--log-level",
            "warning",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the demo exited:\n{self.log_path.read_text()}")
            try:
                if request(self.port, "GET", "/api/me")[0] == 401:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise BenchError("the demo did not start in 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def request(
    port: int,
    method: str,
    path: str,
    body: dict[str, str] | None = None,
    *,
    source: str = "127.0.0.1",
    timeout: float = 60,
) -> tuple[int, str]:
    """One request on a fresh connection from ``source``: (status, Cookie header to send back)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        cookies = [c.split(";", 1)[0] for c in response.headers.get_all("set-cookie") or []]
        return response.status, "; ".join(cookies)
    finally:
        conn.close()


def source_address(i: int) -> str:
    return f"127.0.0.{FIRST_ADDRESS + i}"


def register(port: int, email: str, source: str) -> str:
    status, cookie = request(
        port, "POST", "/api/register", {"email": email, "password": PASSWORD}, source=source
    )
    if status != 201:
        raise BenchError(f"registering {email} answered {status}")
    return cookie


@dataclass
class Storm:
    """Clients logging in back to back until stopped."""

    port: int
    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    done: list[tuple[float, float, int]] = field(default_factory=list)
    """(finished at, seconds taken, status) of every login."""
    started: threading.Barrier | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[threading.Thread]:
        self.started = threading.Barrier(self.clients + 1)
        threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        self.started.wait()
        return threads

    def _client(self, i: int) -> None:
        assert self.started is not None
        self.started.wait()
        body = {"email": storm_email(i), "password": PASSWORD}
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                status, _ = request(self.port, "POST", "/api/login", body, source=source_address(i))
            except OSError:
                status = 0
            ended = time.monotonic()
            with self.lock:
                self.done.append((ended, ended - began, status))


def storm_email(i: int) -> str:
    return f"storm-{i}@example.com"


@dataclass
class Round:
    quiet: Sample
    storm: Sample
    logins_per_s: float
    login_p50_s: float
    login_p99_s: float
    login_failures: int


def one_round(wrk: str, port: int, cookie: str, args: argparse.Namespace, workdir: Path) -> Round:
    options = {
        "connections": args.connections,
        "threads": 1,
        "duration": args.duration,
        "pause_ms": args.pause,
    }
    quiet = run_wrk(wrk, port, "/api/me", [cookie], workdir, **options)
    storm = Storm(port, args.logins)
    threads = storm.run()
    time.sleep(args.ramp)  # every client has a login queued or hashing
    window_start = time.monotonic()
    loaded = run_wrk(wrk, port, "/api/me", [cookie], workdir, **options)
    window_end = time.monotonic()
    storm.stop.set()
    for thread in threads:
        thread.join(timeout=120)
    in_window = [d for d in storm.done if window_start <= d[0] <= window_end]
    took = sorted(d[1] for d in in_window) or [0.0]
    return Round(
        quiet=quiet,
        storm=loaded,
        logins_per_s=len(in_window) / (window_end - window_start),
        login_p50_s=statistics.median(took),
        login_p99_s=took[min(len(took) - 1, round(0.99 * (len(took) - 1)))],
        login_failures=sum(1 for d in storm.done if d[2] != 200),
    )


@dataclass
class Variant:
    label: str
    options: list[str]


def parse_variant(spec: str) -> Variant:
    label, sep, options = spec.partition(":")
    if not sep or not label:
        raise SystemExit(f"--variant wants LABEL:NAME=VALUE,... (or LABEL:), not {spec!r}")
    return Variant(label, [o.strip() for o in options.split(",") if o.strip()])


def prepare(demo: Demo, logins: int) -> str:
    """Register the reader (its cookie is returned) and the storm's accounts."""
    cookie = register(demo.port, "reader@example.com", "127.0.0.1")
    if not cookie:
        raise BenchError("registering the reader set no cookie")
    threads = [
        threading.Thread(
            target=register, args=(demo.port, storm_email(i), source_address(i)), daemon=True
        )
        for i in range(logins)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return cookie


def measure_store(
    wrk: str, label: str, url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, list[Round]]:
    """Every variant's rounds on one store; the variants take turns within each round."""
    demos: list[tuple[Variant, Demo]] = []
    cookies: list[str] = []
    results: dict[str, list[Round]] = {}
    try:
        for n, variant in enumerate(args.variants):
            data_dir = workdir / f"{label}-{n}".replace(" ", "-")
            data_dir.mkdir()
            demo = Demo(url.format(variant=n), data_dir, variant.options)
            demos.append((variant, demo))  # stopped in finally, even if preparing it fails
            cookies.append(prepare(demo, args.logins))
        turns = [(v, d, c) for (v, d), c in zip(demos, cookies, strict=True)]
        for round_no in range(args.rounds):
            for variant, demo, cookie in turns if round_no % 2 == 0 else reversed(turns):
                result = one_round(wrk, demo.port, cookie, args, workdir)
                results.setdefault(variant.label, []).append(result)
                print(
                    f"  {label} / {variant.label} round {round_no + 1}: quiet p50 "
                    f"{result.quiet.p50_ms:.1f} ms p99 {result.quiet.p99_ms:.1f} ms "
                    f"({result.quiet.rps:.0f} req/s); storm p50 {result.storm.p50_ms:.1f} ms "
                    f"p99 {result.storm.p99_ms:.1f} ms ({result.storm.rps:.0f} req/s); "
                    f"{result.logins_per_s:.1f} logins/s (p50 {result.login_p50_s:.1f} s), "
                    f"{result.login_failures} failed logins"
                    + (
                        f", {result.quiet.non_2xx + result.storm.non_2xx} non-2xx reads"
                        if result.quiet.non_2xx + result.storm.non_2xx
                        else ""
                    )
                    + f"; load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
        return results
    finally:
        for _, demo in demos:
            demo.stop()


def report(
    results: dict[tuple[str, str], list[Round]], args: argparse.Namespace, command: str
) -> str:
    paced = f", each connection pausing {args.pause:g} ms between requests" if args.pause else ""
    lines = [
        f"`wrk -t1 -c{args.connections} -d{round(args.duration)}s` on `GET /api/me` (one "
        f"signed-in cookie{paced}), {args.logins} clients logging in back to back during the "
        "storm; "
        f"{args.rounds} rounds, each cell the median (lowest-highest) of the rounds. "
        f"{cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the "
        "end. Variants: "
        + "; ".join(f"{v.label} ({', '.join(v.options) or 'defaults'})" for v in args.variants)
        + ". Command:",
        "",
        "```sh",
        command,
        "```",
        "",
        "| store | variant | quiet p50 | quiet p99 | storm p50 | storm p99 "
        "| reads/s quiet → storm | logins/s | login p50 | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(values: list[float], fmt: str) -> str:
        middle = statistics.median(values)
        return f"{middle:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    for (label, variant), rounds in results.items():
        lines.append(
            f"| {label} | {variant} | {cell([r.quiet.p50_ms for r in rounds], '.1f')} ms "
            f"| {cell([r.quiet.p99_ms for r in rounds], '.1f')} ms "
            f"| {cell([r.storm.p50_ms for r in rounds], '.1f')} ms "
            f"| {cell([r.storm.p99_ms for r in rounds], '.1f')} ms "
            f"| {statistics.median([r.quiet.rps for r in rounds]):.0f} → "
            f"{statistics.median([r.storm.rps for r in rounds]):.0f} "
            f"| {cell([r.logins_per_s for r in rounds], '.1f')} "
            f"| {statistics.median([r.login_p50_s for r in rounds]):.1f} s "
            f"| {sum(r.login_failures for r in rounds)} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        action="append",
        metavar="LABEL=URL",
        help="a demo store (repeatable; replaces the defaults); {workdir} is a temporary "
        "folder, {redis} a throwaway redis-server's host:port. Defaults: "
        + "; ".join(DEFAULT_STORES),
    )
    parser.add_argument("--logins", type=int, default=50, help="concurrent login clients (50)")
    parser.add_argument("--connections", "-c", type=int, default=8, help="wrk -c (8)")
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="wrk seconds (10)")
    parser.add_argument("--rounds", type=int, default=3, help="quiet + storm rounds (3)")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="ms each wrk connection waits between an answer and its next request (default 0: "
        "as fast as the server answers). A pause caps the read load, so that variants do the "
        "same read work and their login throughput can be compared",
    )
    parser.add_argument(
        "--ramp", type=float, default=1.0, help="seconds between the storm's start and wrk's (1)"
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        type=parse_variant,
        metavar="LABEL:NAME=VALUE,...",
        help="a demo set-up to measure (repeatable): PasswordConfig settings for its hasher "
        "(integers or none); default: one variant with the defaults",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    args.stores = args.store or list(DEFAULT_STORES)
    args.variants = args.variants or [Variant("defaults", [])]
    if args.logins > 240:
        parser.error("--logins: at most 240 loopback source addresses (127.0.0.10-249)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="coatcheck-storm-"))
    redis: ThrowawayRedis | None = None
    results: dict[tuple[str, str], list[Round]] = {}
    try:
        for spec in args.stores:
            label, _, url = spec.partition("=")
            if "{redis}" in url and redis is None:
                executable = shutil.which("redis-server")
                if executable is None:
                    print(f"skipping {label}: no redis-server on PATH", file=sys.stderr)
                    continue
                redis = ThrowawayRedis(executable)
            hostport = f"127.0.0.1:{redis.port}" if redis is not None else ""
            # {variant} stays for measure_store: each variant's demo gets its own key prefix.
            store_url = url.format(workdir=workdir, redis=hostport, variant="{variant}")
            for variant, rounds in measure_store(wrk, label, store_url, args, workdir).items():
                results[(label, variant)] = rounds
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    command = "python benchmarks/login_storm.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = report(results, args, command.strip())
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"login_storm.py: {exc}", file=sys.stderr)
        sys.exit(1)
