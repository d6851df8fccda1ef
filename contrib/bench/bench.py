"""hookway vs the floor (a bare aiohttp pass-through), same mock upstream, same load, same run.

    .venv/bin/python contrib/bench/bench.py [--duration 10] [--scenario openai-stream] [--out r.json]

Starts the mock OpenAI upstream, the floor proxy and ``hookway serve`` (generated config pointing at
the mock) as separate subprocesses, checks one answer through each target, then drives each with wrk
(c=32 by default; a warm-up first) and prints req/s, p50/p99 and errors, hookway as a ratio of the
floor. Every subprocess is killed at the end, on errors and on Ctrl-C too. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mock_upstream import EVENTS, TEXT  # noqa: E402  (what every answer must carry)

MODEL = "mock/gpt-bench"
PY = sys.executable


# ---------------------------------------------------------------- answer checks

def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) for every SSE event in a whole response body."""
    out = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def check_openai_json(ctype: str, raw: bytes) -> str:
    assert ctype.startswith("application/json"), f"content-type {ctype!r}"
    body = json.loads(raw)
    assert body["object"] == "chat.completion", body
    text = body["choices"][0]["message"]["content"]
    assert text == TEXT, f"content {text!r}"
    assert body["usage"]["completion_tokens"] == 20, body.get("usage")
    return "chat.completion ok"


def check_openai_sse(ctype: str, raw: bytes) -> str:
    assert ctype.startswith("text/event-stream"), f"content-type {ctype!r}"
    datas = [d for _, d in sse_events(raw)]
    assert datas and datas[-1] == "[DONE]", f"last event {datas[-1:]!r}"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks), chunks
    text = "".join((ch.get("delta") or {}).get("content") or "" for c in chunks for ch in c["choices"])
    assert text == TEXT, f"content {text!r}"
    assert any(c.get("usage") for c in chunks), "no usage chunk"
    return f"{len(chunks)} chunks + [DONE]"


def check_anthropic_json(ctype: str, raw: bytes) -> str:
    assert ctype.startswith("application/json"), f"content-type {ctype!r}"
    body = json.loads(raw)
    assert body["type"] == "message", body
    text = "".join(b.get("text", "") for b in body["content"] if b["type"] == "text")
    assert text == TEXT, f"content {text!r}"
    assert body["usage"]["output_tokens"] == 20, body.get("usage")
    return "message ok"


def check_anthropic_sse(ctype: str, raw: bytes) -> str:
    assert ctype.startswith("text/event-stream"), f"content-type {ctype!r}"
    events = [(n, json.loads(d)) for n, d in sse_events(raw)]
    names = [n for n, _ in events]
    assert names[:1] == ["message_start"] and names[-1:] == ["message_stop"], names
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == TEXT, f"content {text!r}"
    return f"{len(events)} events, message_start..message_stop"


# ---------------------------------------------------------------- scenarios

_MESSAGES = [{"role": "user", "content": "Say twenty words."}]


@dataclass
class Scenario:
    path: str
    body: dict
    check_floor: Callable[[str, bytes], str]
    check_hookway: Callable[[str, bytes], str]
    plugins: tuple[str, ...]          # hookway plugins it needs


SCENARIOS = {
    "openai-nonstream": Scenario(
        "/v1/chat/completions", {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64},
        check_openai_json, check_openai_json, ("openai",)),
    "openai-stream": Scenario(
        "/v1/chat/completions",
        {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64, "stream": True,
         "stream_options": {"include_usage": True}},
        check_openai_sse, check_openai_sse, ("openai",)),
    # The client speaks Anthropic Messages (as Claude Code does); hookway translates to a provider
    # of type cerebras (the mock stands in for Cerebras) and back. The floor forwards the same bytes
    # untranslated, so the ratio includes translation cost.
    "anthropic-nonstream": Scenario(
        "/anthropic/v1/messages",
        {"model": "cerebras/gpt-bench", "messages": _MESSAGES, "max_tokens": 64},
        check_openai_json, check_anthropic_json, ("openai", "cerebras", "anthropic")),
    "anthropic-stream": Scenario(
        "/anthropic/v1/messages",
        {"model": "cerebras/gpt-bench", "messages": _MESSAGES, "max_tokens": 64, "stream": True},
        check_openai_sse, check_anthropic_sse, ("openai", "cerebras", "anthropic")),
}


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Procs:
    workdir: Path
    items: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], port: int, cpus: str | None, timeout: float = 30) -> Proc:
        if cpus:
            argv = ["taskset", "-c", cpus] + argv
        log = self.workdir / f"{name}.log"
        p = Proc(name, subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, cwd=HERE), log)
        self.items.append(p)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.popen.returncode}:\n{p.tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return p
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s:\n{p.tail()}")

    def stop_all(self) -> None:
        for p in reversed(self.items):
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)   # its own session: it and its workers
                except ProcessLookupError:
                    pass
        for p in reversed(self.items):
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.popen.wait()
        self.items.clear()


def cpu_seconds(pid: int) -> float:
    """user+system CPU of a process and its live children (hookway --workers N)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


# ---------------------------------------------------------------- load

def fetch(url: str, body: bytes) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Bearer bench", "x-api-key": "bench",
        "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def wrk(url: str, body_file: Path, seconds: float, conns: int, threads: int, cpus: str | None) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(HERE / "post.lua"), url, "--", str(body_file)]
    if cpus:
        argv = ["taskset", "-c", cpus] + argv
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(line[len("BENCH_JSON "):])


def measure(target: Proc, url: str, body_file: Path, args, cpus: str | None) -> dict:
    if args.warmup > 0:
        wrk(url, body_file, args.warmup, args.connections, args.threads, cpus)
    cpu0 = cpu_seconds(target.popen.pid)
    w = wrk(url, body_file, args.duration, args.connections, args.threads, cpus)
    cpu = cpu_seconds(target.popen.pid) - cpu0
    secs = w["duration_us"] / 1e6
    errors = w["connect"] + w["read"] + w["write"] + w["timeout"] + w["status"]
    return {"rps": round(w["requests"] / secs, 1), "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
            "p90_ms": w["p90_us"] / 1000, "max_ms": w["max_us"] / 1000, "requests": w["requests"],
            "errors": errors, "non_2xx": w["status"], "socket_errors": errors - w["status"],
            "duration_s": round(secs, 2), "target_cpu_s": round(cpu, 2),
            "cpu_us_per_req": round(cpu / max(1, w["requests"]) * 1e6, 1)}


# ---------------------------------------------------------------- hookway

def installed_plugins() -> set[str]:
    return {ep.name for ep in entry_points(group="hookway")}


def hookway_config(path: Path, upstream: str, plugins: set[str], log_level: str) -> None:
    config = {
        "server": {"log_level": log_level},
        "plugins": {p: {} for p in sorted(plugins)},
        "providers": {"mock": {"type": "openai",
                               "keys": [{"name": "k", "value": "sk-test", "models": ["*"]}],
                               "network_config": {"base_url": upstream}}},
    }
    if "cerebras" in plugins:   # the same mock, behind the Cerebras adapter (its quirks included)
        config["providers"]["cerebras"] = {"type": "cerebras", "keys": [{"name": "c", "value": "sk-test"}],
                                           "network_config": {"base_url": upstream}}
    path.write_text(json.dumps(config, indent=2))


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="repeatable; default: all (anthropic-* skipped if the plugin is missing)")
    ap.add_argument("--targets", default="floor,hookway", help="comma list of floor,hookway")
    ap.add_argument("--duration", type=float, default=10, help="seconds measured per target and scenario")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of load before each measurement (0: none)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each target N times, alternating; report the median (use 3+ on a busy machine)")
    ap.add_argument("-c", "--connections", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=min(4, os.cpu_count() or 1), help="wrk threads")
    ap.add_argument("--workers", type=int, default=1, help="hookway --workers")
    ap.add_argument("--hookway-bin", default=str(Path(PY).parent / "hookway"))
    ap.add_argument("--log-level", default="warning", help="hookway server.log_level")
    ap.add_argument("--pin", action="store_true",
                    help="taskset: the measured target alone on CPU 0, mock and wrk on the other CPUs")
    ap.add_argument("--out", help="write the JSON results here")
    args = ap.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    ncpu = os.cpu_count() or 1
    pin_target, pin_rest = ("0", f"1-{ncpu - 1}") if args.pin and ncpu > 1 and shutil.which("taskset") else (None, None)

    notes = []
    if "hookway" in args.targets and not Path(args.hookway_bin).exists():
        notes.append(f"skip hookway: {args.hookway_bin} not found")
        args.targets.remove("hookway")
    plugins = installed_plugins()
    runnable = []
    for name in args.scenario or list(SCENARIOS):
        missing = [p for p in SCENARIOS[name].plugins if p not in plugins]
        if "hookway" in args.targets and missing:
            notes.append(f"skip {name}: hookway plugin(s) {', '.join(missing)} not installed "
                         f"(pip install -e {' '.join('plugins/' + m for m in missing)})")
        else:
            runnable.append(name)
    for n in notes:
        print(n, file=sys.stderr)
    if not runnable:
        return 2

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so `finally` runs on kill too
    workdir = Path(tempfile.mkdtemp(prefix="hookway-bench-"))
    procs = Procs(workdir)
    results, failed = [], False
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.start("mock", [PY, "mock_upstream.py", "--port", str(up_port)], up_port, pin_rest)
        targets: dict[str, tuple[Proc, str]] = {}
        if "floor" in args.targets:
            port = free_port()
            targets["floor"] = (procs.start("floor", [PY, "floor.py", "--port", str(port), "--upstream", upstream],
                                            port, pin_target), f"http://127.0.0.1:{port}")
        if "hookway" in args.targets:
            port = free_port()
            cfg = workdir / "hookway.json"
            needed = {p for s in runnable for p in SCENARIOS[s].plugins}
            hookway_config(cfg, upstream, needed, args.log_level)
            argv = [args.hookway_bin, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(args.workers)]
            targets["hookway"] = (procs.start("hookway", argv, port, pin_target), f"http://127.0.0.1:{port}")

        print(f"wrk -t{args.threads} -c{args.connections}, {args.duration:g}s measured after {args.warmup:g}s "
              f"warm-up; {ncpu} CPUs{', pinned' if pin_target else ''}; logs in {workdir}", file=sys.stderr)
        for name in runnable:
            sc = SCENARIOS[name]
            body = json.dumps(sc.body, separators=(",", ":")).encode()
            body_file = workdir / f"{name}.json"
            body_file.write_bytes(body)
            ok = {}
            for tname, (proc, base) in targets.items():
                check = sc.check_floor if tname == "floor" else sc.check_hookway
                status, ctype, raw = fetch(base + sc.path, body)
                try:
                    assert status == 200, f"HTTP {status}"
                    print(f"check {tname:8} {name:19} ok ({check(ctype, raw)})", file=sys.stderr)
                    ok[tname] = (proc, base + sc.path)
                except (AssertionError, ValueError, KeyError, IndexError, TypeError) as exc:
                    print(f"FAIL {tname} {name}: wrong answer ({exc}); not measured.\n"
                          f"  body: {raw[:600]!r}\n  log tail:\n{proc.tail()}", file=sys.stderr)
                    failed = True
            runs: dict[str, list[dict]] = {t: [] for t in ok}
            for rnd in range(args.rounds):   # targets alternate, so drift on a busy machine hits both
                for tname, (proc, url) in ok.items():
                    runs[tname].append(measure(proc, url, body_file, args, pin_rest))
                    print(f"  round {rnd + 1}/{args.rounds} {tname:8} {runs[tname][-1]['rps']:8.0f} req/s",
                          file=sys.stderr)
            for tname, rs in runs.items():
                median = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
                results.append({"target": tname, "scenario": name, **median,
                                **({"rounds_rps": [r["rps"] for r in rs]} if len(rs) > 1 else {})})
    finally:
        procs.stop_all()

    floors = {r["scenario"]: r for r in results if r["target"] == "floor"}
    for r in results:
        f = floors.get(r["scenario"])
        if r["target"] != "floor" and f:
            r["ratio_rps"] = round(r["rps"] / f["rps"], 3)
            r["ratio_p50"] = round(r["p50_ms"] / f["p50_ms"], 3) if f["p50_ms"] else None
            r["ratio_cpu"] = round(f["cpu_us_per_req"] / r["cpu_us_per_req"], 3) if r["cpu_us_per_req"] else None
    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
                         "wrk_threads": args.threads, "rounds": args.rounds, "hookway_workers": args.workers, "cpus": ncpu,
                         "pinned": bool(pin_target), "python": sys.version.split()[0],
                         "stream_events": len(EVENTS)},
            "notes": notes, "results": results}, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


def print_table(results: list[dict]) -> None:
    head = f"{'target':8} {'scenario':19} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} " \
           f"{'cpu us/req':>10} {'vs floor':>9} {'cpu vs floor':>12}"
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = f"{r['ratio_rps']:.2f}x" if "ratio_rps" in r else ""
        cpu = f"{r['ratio_cpu']:.2f}x" if r.get("ratio_cpu") else ""
        print(f"{r['target']:8} {r['scenario']:19} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['errors']:7d} {r['cpu_us_per_req']:10.0f} {ratio:>9} {cpu:>12}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:   # the servers are already stopped by main's `finally`
        print("interrupted", file=sys.stderr)
        sys.exit(130)
