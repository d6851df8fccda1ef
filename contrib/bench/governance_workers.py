"""What exact budgets and rate limits across workers cost per request.

    .venv/bin/python contrib/bench/governance_workers.py [--duration 10] [--workers 2] [--rounds 2]

Part 1 (in this process): the SQLite transactions of the multi-process path alone — one admission
(check every budget and limit, count the request) and one charge — on a temp database, and the
same wrapped in the thread hop the gateway makes (``run_in_executor`` from an event loop).

Part 2: the mock upstream and, in turn, ``hookway serve --workers N`` with the governance plugin in
both modes, on the same key (a budget, a request limit and a token limit, none of them near being
reached), driven by wrk (non-streaming OpenAI chat, byte pass-through, c=32):

* ``memory``: ``multi_process: false`` — each worker decides from its own memory (the
  single-process path; across workers a limit may be overrun by one sync interval of traffic);
* ``database``: ``multi_process: true`` (the default with workers > 1) — each admission and each
  charge is one SQLite write transaction on the governance thread.

Prints req/s, p50/p99 and the workers' CPU per request; the difference between the two rows is
what exactness across workers costs. Rounds alternate the modes; the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import PY, Procs, cpu_seconds, free_port  # noqa: E402

KEY = "sk-hw-bench-0123456789abcdefghijklmn"
GOVERNED = {"id": "bench", "value": KEY,
            "budget": {"max_limit": 1e9, "reset_duration": "1d"},
            "rate_limit": {"request_max_limit": 10**9, "request_reset_duration": "1h",
                           "token_max_limit": 10**12, "token_reset_duration": "1h"}}
BODY = {"model": "mock/gpt-bench", "messages": [{"role": "user", "content": "hello"}]}


# ---------------------------------------------------------------- part 1: the transactions alone

def micro(n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from hookway_governance import shared
    from hookway_governance.engine import Engine, Limits
    from hookway_governance.model import entity_counters, parse_virtual_key
    from hookway_governance.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="hookway-gov-bench-"))
    try:
        store = Store(str(tmp / "governance.db"))
        engine = Engine()
        now = time.time()
        key = parse_virtual_key({k: v for k, v in GOVERNED.items() if k not in ("id", "value")} | {"name": "b"},
                                value=KEY, now=now)
        engine.put(key, now)
        store.put("virtual_key", key.doc(), key.value_hash, [(cid, now) for cid, _ in entity_counters(key)])
        ticket = engine.identify(key.value_hash, now)
        admit, charge = (Limits.admit, (ticket, now)), (Limits.settle, (ticket, "mock", 0.0001, 32, now))

        for _ in range(200):
            shared.apply(store, engine, [admit])
        t0 = time.perf_counter()
        for _ in range(n):
            shared.apply(store, engine, [admit])
            shared.apply(store, engine, [charge])
        direct = (time.perf_counter() - t0) / n * 1e6

        async def through_the_thread(concurrent: int) -> float:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(1) as pool:
                in_db = shared.InDatabase(lambda fn, *a: loop.run_in_executor(pool, fn, *a), store, engine)

                async def requests(count: int) -> None:
                    for _ in range(count):
                        await in_db.decide(admit[0], *admit[1])
                        await in_db.decide(charge[0], *charge[1])
                await requests(200)
                t0 = time.perf_counter()
                await asyncio.gather(*(requests(n // concurrent) for _ in range(concurrent)))
                return (time.perf_counter() - t0) / (n // concurrent * concurrent) * 1e6
        one_at_a_time = asyncio.run(through_the_thread(1))
        sixteen = asyncio.run(through_the_thread(16))
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"admission + charge of one request (n={n}, one process, no contention), wall time per request:\n"
          f"  2 transactions, called directly:                 {direct:5.0f} us\n"
          f"  awaited from an event loop, one request at a time: {one_at_a_time:5.0f} us\n"
          f"  same, 16 requests at a time (batched):             {sixteen:5.0f} us")


# ---------------------------------------------------------------- part 2: two workers under load

def config(path: Path, port: int, upstream: str, data_dir: Path, multi_process: bool) -> None:
    path.write_text(json.dumps({
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning", "data_dir": str(data_dir)},
        "plugins": {"openai": {}, "governance": {
            "multi_process": multi_process, "pricing": {"mock/*": {"input": 1, "output": 1}},
            "virtual_keys": [GOVERNED]}},
        "providers": {"mock": {"type": "openai", "keys": [{"value": "sk-test"}],
                               "network_config": {"base_url": upstream}}},
    }))


def check(url: str) -> None:
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(BODY).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["object"] == "chat.completion"


def wait_for_workers(url: str, n: int, timeout: float = 30) -> None:
    """Until /health has answered from ``n`` processes (workers start one after the other)."""
    pids: set = set()
    deadline = time.monotonic() + timeout
    while len(pids) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {n} workers answered")
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            pids.add(json.loads(r.read())["pid"])


def wrk(url: str, body_file: Path, seconds: float, conns: int, threads: int) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-H", f"x-bf-vk: {KEY}", "-s", str(HERE / "post.lua"), url + "/v1/chat/completions", "--", str(body_file)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_JSON "))
    return json.loads(line[len("BENCH_JSON "):])


def requests_counted(data_dir: Path) -> int:
    db = sqlite3.connect(data_dir / "governance.db")
    try:
        return int(db.execute("SELECT usage FROM counters WHERE id = 'vk:bench:rate_limit:requests:1h'").fetchone()[0])
    finally:
        db.close()


def measure(procs: Procs, workdir: Path, upstream: str, mode: str, args) -> dict:
    port = free_port()
    data_dir = workdir / f"data-{mode}-{time.monotonic_ns()}"
    cfg = workdir / f"{mode}.json"
    config(cfg, port, upstream, data_dir, multi_process=(mode == "database"))
    gw = procs.start(f"hookway-{mode}", [str(Path(PY).parent / "hookway"), "serve", "--config", str(cfg),
                                         "--workers", str(args.workers)], port, None)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_workers(url, args.workers)
        check(url)
        body = workdir / "body.json"
        body.write_text(json.dumps(BODY))
        wrk(url, body, args.warmup, args.connections, min(2, args.connections))
        cpu0 = cpu_seconds(gw.popen.pid)
        w = wrk(url, body, args.duration, args.connections, min(2, args.connections))
        cpu = cpu_seconds(gw.popen.pid) - cpu0
    finally:
        procs.stop_all_but_first()
    secs = w["duration_us"] / 1e6
    return {"mode": mode, "rps": w["requests"] / secs, "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
            "errors": w["connect"] + w["read"] + w["write"] + w["timeout"] + w["status"],
            "cpu_us_per_req": cpu / max(1, w["requests"]) * 1e6, "counted": requests_counted(data_dir)}


class UpstreamFirst(Procs):
    def stop_all_but_first(self) -> None:
        first, rest = self.items[:1], self.items[1:]
        self.items = rest
        self.stop_all()
        self.items = first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-c", "--connections", type=int, default=32)
    ap.add_argument("--micro", type=int, default=5000, help="transactions timed in part 1 (0: skip)")
    args = ap.parse_args(argv)
    if args.micro:
        micro(args.micro)
    if not shutil.which("wrk"):
        print("wrk not found (apt-get install -y wrk): part 2 skipped", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="hookway-gov-bench-"))
    procs = UpstreamFirst(workdir)
    results: dict[str, list[dict]] = {"memory": [], "database": []}
    try:
        up_port = free_port()
        procs.start("mock", [PY, "mock_upstream.py", "--port", str(up_port)], up_port, None)
        upstream = f"http://127.0.0.1:{up_port}/v1"
        for _ in range(args.rounds):
            for mode in results:
                results[mode].append(measure(procs, workdir, upstream, mode, args))
    finally:
        procs.stop_all()
    print(f"\nhookway serve --workers {args.workers}, wrk -c{args.connections}, {args.duration:g}s, "
          f"median of {args.rounds}; logs in {workdir}")
    print(f"{'mode':10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'cpu us/req':>10} "
          f"{'requests counted':>16}")
    medians = {}
    for mode, runs in results.items():
        m = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "errors", "cpu_us_per_req")}
        medians[mode] = m
        print(f"{mode:10} {m['rps']:8.0f} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f} {m['errors']:6.0f} "
              f"{m['cpu_us_per_req']:10.0f} {', '.join(str(r['counted']) for r in runs):>16}")
    d = medians["database"]["cpu_us_per_req"] - medians["memory"]["cpu_us_per_req"]
    print(f"database - memory: {d:+.0f} us CPU per request, "
          f"{medians['database']['p50_ms'] - medians['memory']['p50_ms']:+.2f} ms p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
