"""The `hookway` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HOOKWAY = [sys.executable, "-m", "hookway.cli"]


def run(*args, env=None):
    return subprocess.run([*HOOKWAY, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_lists_every_problem_and_fails(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server: {port: high}\nplugins: {no-such-plugin: {}}\n"
                   "providers: {c: {keys: [{value: env.HW_NOT_SET_ANYWHERE}]}}\n")
    r = run("check", "--config", str(cfg))
    assert r.returncode == 1
    assert "3 problem(s)" in r.stderr
    assert "server.port: expected integer, found a string 'high'" in r.stderr
    assert "environment variable HW_NOT_SET_ANYWHERE is not set" in r.stderr
    assert "plugins.no-such-plugin: plugin 'no-such-plugin' is not installed (install the package hookway-no-such-plugin)" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_lists_core_and_plugin_settings_problems_in_one_run(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server: {port: high}\n"
                   "plugins: {openai: {}, logstore: {retention: soon}}\n"
                   "bundles: {team-a: {logstore: {no_such_setting: 1}}}\n")
    r = run("check", "--config", str(cfg))
    assert r.returncode == 1
    assert "3 problem(s)" in r.stderr, r.stderr
    assert "server.port: expected integer" in r.stderr
    assert "plugins.logstore.retention: " in r.stderr and "soon" in r.stderr
    assert "bundles.team-a.logstore" in r.stderr and "no_such_setting" in r.stderr


def test_check_accepts_a_good_config(tmp_path):
    cfg = tmp_path / "ok.json"
    cfg.write_text(json.dumps({"server": {"port": 9999}}))
    r = run("check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "ok (0 provider(s)" in r.stdout


def test_provider_type_without_plugin_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("providers: {mystery: {type: mystery}}\n")
    r = run("check", "--config", str(cfg))
    assert r.returncode == 1
    assert "providers.mystery: type 'mystery' is provided by no enabled plugin" in r.stderr


def test_check_lists_provider_settings_its_adapter_does_not_take(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins: {openai: {}, cerebras: {}, anthropic: {}}\n"
                   "providers:\n"
                   "  local: {type: openai, settings: {supports_topk: true}}\n"
                   "  cerebras: {settings: {max_tokens_field: max_token}}\n"
                   "  anthropic: {settings: {default_max_tokens: lots}}\n")
    r = run("check", "--config", str(cfg))
    assert r.returncode == 1
    assert "3 problem(s)" in r.stderr, r.stderr
    assert "providers.local.settings.supports_topk: unknown key (known keys: budget_to_effort, " in r.stderr
    assert "providers.cerebras.settings.max_tokens_field: expected one of " in r.stderr
    assert "providers.anthropic.settings.default_max_tokens: expected integer, found a string 'lots'" in r.stderr


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def ours(proc: subprocess.Popen, pid: int) -> bool:
    """Whether ``pid`` is the `hookway serve` process or one of its workers."""
    if pid == proc.pid:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return f"\nPPid:\t{proc.pid}\n" in status


class PortTaken(Exception):
    pass


def wait_for_health(proc: subprocess.Popen, port: int, timeout: float = 60) -> dict:
    """/health of ``proc`` once it answers (start-up is slow on a loaded machine: the deadline only
    bounds a failure). PortTaken if another process got the port between its pick and the bind."""
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read()
            if f"cannot serve on 127.0.0.1:{port}" in out:
                raise PortTaken(out)
            raise AssertionError(f"hookway serve exited with {proc.returncode}: {out}")
        try:
            health = get_json(url)
        except OSError:
            health = None
        if health is not None:
            if not ours(proc, health["pid"]):
                raise PortTaken(f"another process answers on port {port}")
            return health
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
        time.sleep(0.1)


def serve(tmp_path, workers: int) -> tuple[subprocess.Popen, int, dict]:
    """`hookway serve` on a free port, once it answers: (process, port, health). A port is free
    when picked, but another process may take it before the server binds it: then another one."""
    for _ in range(5):
        port = free_port()
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"server: {{port: {port}}}\n")
        proc = subprocess.Popen([*HOOKWAY, "serve", "--config", str(cfg), "--workers", str(workers)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            return proc, port, wait_for_health(proc, port)
        except BaseException as exc:
            proc.kill()
            proc.communicate(timeout=30)
            if not isinstance(exc, PortTaken):
                raise
    raise AssertionError("no free port could be served on in 5 tries")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_and_stops_cleanly(tmp_path, workers):
    proc, port, health = serve(tmp_path, workers)
    try:
        assert health["status"] == "ok"
        if workers == 2:   # both processes accept on the shared port (the second may start later)
            pids: set = set()
            deadline = time.monotonic() + 60
            while len(pids) < 2 and time.monotonic() < deadline:
                pid = get_json(f"http://127.0.0.1:{port}/health")["pid"]
                if ours(proc, pid):
                    pids.add(pid)
            assert len(pids) == 2, pids
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "serving" in out and "Traceback" not in out


def test_serve_with_a_bad_config_exits_with_the_problems(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {port: -1}\n")
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert "server.port" in r.stderr and "Traceback" not in r.stderr


def test_plugins_lists_what_the_config_enables(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins: {not-installed-x: {}}\n")
    r = run("plugins", "--config", str(cfg))
    assert r.returncode == 0
    assert "not-installed-x" in r.stdout and "(not installed)" in r.stdout


def test_serve_on_a_port_in_use_says_so_without_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"server: {{port: {port}}}\n")
        r = run("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_the_workers_flag_reaches_the_config_plugins_read(tmp_path):
    """Plugins read server.workers (governance decides in its database when it is > 1)."""
    from hookway.cli import _build
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server: {workers: 1}\n")
    assert _build(str(cfg), None, None, 3)[0].server.workers == 3
    assert _build(str(cfg), None, None)[0].server.workers == 1


def test_a_server_process_freezes_the_built_app_and_collects_young_objects_less_often():
    import gc

    from hookway.cli import _tune_gc
    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == (7000, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
