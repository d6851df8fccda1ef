"""Fixtures for the semantic-cache tests: a gateway factory wired to the fake upstream (which also
answers the embeddings, with fixed vectors per phrase) and a real redis-server on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

from hookway.testing import Reply

# Fixed embeddings: every phrase of a conversation that contains a needle gets its vector.
# cos(capital-of-France, France's capital) = 0.96; cos(capital-of-France, capital-of-Spain) = 0.6.
VECTORS = {
    "capital of france": [1.0, 0.0, 0.0, 0.0],
    "france's capital": [0.96, 0.28, 0.0, 0.0],
    "capital of spain": [0.6, 0.8, 0.0, 0.0],
    "tallest mountain": [0.0, 0.0, 1.0, 0.0],
}
OTHER = [0.0, 0.0, 0.0, 1.0]
ANSWER = "Paris is the capital of France."


def embedding_for(text: str) -> list[float]:
    lowered = text.lower()
    for needle, vector in VECTORS.items():
        if needle in lowered:
            return vector
    return OTHER


def chat_calls(fake) -> list:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


def embedding_calls(fake) -> list:
    return [r for r in fake.requests if r.path.endswith("/embeddings")]


def responder(rec) -> Reply:
    if rec.path.endswith("/embeddings"):
        return Reply(embedding=embedding_for(rec.json["input"][0]))
    return Reply(text=ANSWER, usage=(12, 7, 0), chunk_size=6)


@pytest.fixture
def sc():
    """The helpers above, for the test modules (conftest is not importable by name)."""
    return SimpleNamespace(VECTORS=VECTORS, OTHER=OTHER, ANSWER=ANSWER, chat_calls=chat_calls,
                           embedding_calls=embedding_calls, embedding_for=embedding_for, responder=responder)


@pytest.fixture
def cache_gateway(fake_upstream, start_gateway, tmp_path):
    """``cache_gateway(**settings)``: a gateway with the openai (and, when installed, anthropic)
    plugins and semantic-cache configured with ``settings`` (embeddings from the fake upstream
    unless ``embeddings=None``)."""
    from hookway.plugins import discover

    fake_upstream.responder = responder
    installed = discover()

    def start(extra_plugins=None, providers=None, data_dir=None, **settings):
        if "embeddings" not in settings:
            settings["embeddings"] = {"provider": "up", "model": "text-embedding-3-small"}
        elif settings["embeddings"] is None:
            del settings["embeddings"]
        plugins = {"openai": {}, "semantic-cache": settings}
        if "anthropic" in installed:
            plugins = {"openai": {}, "anthropic": {}, "semantic-cache": settings}
        for name in extra_plugins or {}:
            plugins[name] = {}
        config = {
            "server": {"data_dir": str(data_dir or tmp_path)},
            "plugins": plugins,
            "providers": providers or {"up": {"type": "openai", "keys": [{"value": "k"}],
                                              "network_config": {"base_url": fake_upstream.url}}},
        }
        return start_gateway(config, extra_plugins)
    return start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(binary: str) -> tuple[subprocess.Popen, int]:
    """redis-server on a free port. The port is free when picked but another process can take it
    before redis binds it: then this redis exits (or another one answers there), and the next port
    is tried. The deadline only bounds a failure (start-up is slow on a loaded machine)."""
    import redis

    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            try:
                with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
                    if client.info("server")["process_id"] == proc.pid:
                        return proc, port
                    break           # another process's redis took the port first
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port} in 30 s")
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.fail("redis-server could not start on 5 free ports")


@pytest.fixture(scope="session")
def redis_url():
    """A throw-away redis-server (no persistence) on a free port, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("HOOKWAY_CI"):
            pytest.fail(message + "; HOOKWAY_CI is set, so the Redis store must be tested")
        pytest.skip(message)
    try:
        import redis  # noqa: F401
    except ImportError:
        message = "the redis Python package is not installed (pip install 'hookway-semantic-cache[redis]')"
        if os.environ.get("HOOKWAY_CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc, port = _start_redis(binary)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
