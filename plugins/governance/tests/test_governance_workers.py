"""Budgets and rate limits hold across worker processes: ``hookway serve --workers 2`` as a real
subprocess, 50 parallel requests spread over both workers (one connection each, so SO_REUSEPORT
hands them out), against the fake upstream; and two gateways in this process sharing a database."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import httpx
import openai
import pytest
import yaml

from hookway.testing import Reply

from governance_testing import COST, PRICING, chat, client, gateway_config, plugin_of

LIMITED_KEY = "sk-hw-limited-0123456789abcdefghij"
BUDGET_KEY = "sk-hw-budgeted-0123456789abcdefghi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


@pytest.fixture
def two_workers(fake_upstream, tmp_path):
    """``hookway serve --workers 2`` with a key limited to 10 requests an hour and a key with a
    budget of $0.19 a day (ten requests' worth); yields (url, database path)."""
    port = free_port()
    config = {
        "server": {"port": port, "data_dir": str(tmp_path / "data")},
        "plugins": {"openai": {}, "governance": {
            "pricing": PRICING,
            # Far longer than the test: the workers' periodic sync cannot be what keeps them exact.
            "sync_interval_seconds": 60,
            "virtual_keys": [
                {"id": "limited", "value": LIMITED_KEY,
                 "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1h"}},
                {"id": "budgeted", "value": BUDGET_KEY, "budget": {"max_limit": 0.19, "reset_duration": "1d"}},
            ]}},
        "providers": {"up": {"type": "openai", "keys": [{"value": "sk-upstream"}],
                             "network_config": {"base_url": fake_upstream.url}, "models": ["m"]}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "hookway.cli", "serve", "--config", str(path), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        pids: set = set()           # both workers answer (the second may start a little later)
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            answer = health(url)
            if answer is None:
                time.sleep(0.05)
            else:
                pids.add(answer["pid"])
        if len(pids) != 2:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"both workers should answer, saw {pids}; the server said:\n{out[-4000:]}")
        yield url, tmp_path / "data" / "governance.db"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out


async def burst(url: str, key: str, n: int, concurrency: int) -> list[tuple[int, str]]:
    """``n`` chat requests, at most ``concurrency`` at a time, each on a new connection; the
    status of each and the worker that answered (its request ids' per-process prefix)."""
    limits = httpx.Limits(max_keepalive_connections=0)     # a new connection per request
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        async def one():
            async with gate:
                r = await http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                    json={"model": "up/m", "messages": [{"role": "user", "content": "x"}]})
                return r.status_code, r.headers["x-request-id"][:16]
        return await asyncio.gather(*(one() for _ in range(n)))


def stored_usage(db_path, counter_id: str) -> float:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT usage FROM counters WHERE id = ?", (counter_id,)).fetchone()[0]
    finally:
        db.close()


def test_a_request_limit_of_10_lets_exactly_10_of_50_parallel_requests_through_two_workers(
        two_workers, fake_upstream):
    url, db_path = two_workers
    fake_upstream.responder = lambda rec: Reply(text="hello", first_byte_delay=0.05)
    answers = asyncio.run(burst(url, LIMITED_KEY, 50, concurrency=50))
    statuses = [status for status, _ in answers]
    assert len({worker for _, worker in answers}) == 2        # both workers took requests
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    assert len(fake_upstream.requests) == 10
    assert stored_usage(db_path, "vk:limited:rate_limit:requests:1h") == 10


def test_a_budget_shared_by_two_workers_is_overrun_only_by_the_requests_in_flight(two_workers, fake_upstream):
    url, db_path = two_workers
    fake_upstream.responder = lambda rec: Reply(text="hello", first_byte_delay=0.02)
    in_flight = 4
    answers = asyncio.run(burst(url, BUDGET_KEY, 50, concurrency=in_flight))
    statuses = [status for status, _ in answers]
    ok = statuses.count(200)
    assert len({worker for _, worker in answers}) == 2
    assert statuses.count(402) == 50 - ok
    # At least ceil(0.19 / 0.02) = 10 pass; at most 10 plus the others in flight when it was reached.
    assert 10 <= ok <= 10 + in_flight - 1
    # Every admitted request was charged, in the database, by the worker that served it.
    assert stored_usage(db_path, "vk:budgeted:budget:1d") == pytest.approx(ok * COST)
    later = asyncio.run(burst(url, BUDGET_KEY, 4, concurrency=4))
    assert [status for status, _ in later] == [402] * 4


def test_two_gateways_deciding_in_the_database_see_each_others_requests_at_once(fake_upstream, start_gateway,
                                                                                tmp_path):
    """Two processes' worth of state on one database (each its own connection, memory and
    thread), their periodic sync a minute away: every request is checked against what the other
    counted and charged, at once."""
    config = gateway_config(fake_upstream, tmp_path, governance={
        "multi_process": True, "sync_interval_seconds": 60,
        "virtual_keys": [
            {"id": "limited", "value": LIMITED_KEY,
             "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}},
            {"id": "budgeted", "value": BUDGET_KEY, "budget": {"max_limit": 0.05, "reset_duration": "1d"}}]})
    a, b = start_gateway(config), start_gateway(config)
    for gw in (a, b, a):
        chat(client(gw, LIMITED_KEY))
    for gw in (b, a):
        with pytest.raises(openai.RateLimitError):
            chat(client(gw, LIMITED_KEY))
    for gw in (a, b, b):             # 0.02, 0.04 (< 0.05: admitted), then 0.06
        chat(client(gw, BUDGET_KEY))
    for gw in (a, b):
        with pytest.raises(openai.APIStatusError) as exc:
            chat(client(gw, BUDGET_KEY))
        assert exc.value.status_code == 402
        assert "$0.0600 spent" in exc.value.message
    # Each gateway's memory (what the API shows) follows the rows its own transactions read.
    assert plugin_of(b).engine.counters["vk:budgeted:budget:1d"].usage == pytest.approx(3 * COST)
