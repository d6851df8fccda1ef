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


def get_json(url):
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def wait_for(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return get_json(url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_and_stops_cleanly(tmp_path, workers):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"server: {{port: {port}}}\n")
    proc = subprocess.Popen([*HOOKWAY, "serve", "--config", str(cfg), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for(f"http://127.0.0.1:{port}/health")
        assert health["status"] == "ok"
        if workers == 2:   # both processes accept on the shared port (the second may start later)
            pids: set = set()
            deadline = time.time() + 20
            while len(pids) < 2 and time.time() < deadline:
                pids.add(get_json(f"http://127.0.0.1:{port}/health")["pid"])
            assert len(pids) == 2, pids
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
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
