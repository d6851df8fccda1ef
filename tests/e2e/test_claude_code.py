"""The real Claude Code CLI as a full agent through hookway, on a scripted fake Cerebras.

The fake upstream only speaks the OpenAI wire format. Its replies are computed from the
conversation it receives: it asks Claude Code to write a script, then to run it, then reports the
output it finds in the tool result. A broken translation (lost tool results, wrong tool ids,
mangled tool calls or stop reasons) breaks the chain and fails the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from hookway.testing import Reply

ROOT = Path(__file__).resolve().parents[2]


def claude_binary() -> str | None:
    """The Claude Code CLI: $CLAUDE_BIN, the copy `make test` installs, or one on PATH."""
    candidates = [os.environ.get("CLAUDE_BIN"),
                  ROOT / ".cache/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude",
                  ROOT / ".cache/claude-code/node_modules/@anthropic-ai/claude-code-linux-arm64/claude",
                  shutil.which("claude")]
    for c in candidates:
        if c and Path(c).exists() and os.access(c, os.X_OK):
            return str(c)
    return None


CLAUDE = claude_binary()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CLAUDE is None and not os.environ.get("HOOKWAY_CI"), reason="Claude Code CLI not installed "
                                 "(make test installs it with npm into .cache/claude-code)")]


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def make_agent_script(workdir: Path, nonce: str):
    """The fake Cerebras' side of the conversation, decided from what it receives."""
    script = workdir / "compute.py"
    seen = {"agent_turns": 0, "side_requests": 0}

    def respond(rec) -> Reply:
        body = rec.json or {}
        if not body.get("tools"):
            seen["side_requests"] += 1          # titles, summaries: no tools, short answer
            return Reply(text="Compute script", chunk_size=4)
        seen["agent_turns"] += 1
        names = {t["function"]["name"] for t in body["tools"]}
        assert {"Write", "Bash"} <= names, names
        results = tool_messages(body)
        if not results:
            return Reply(tool_calls=[{"id": "call_write_1", "name": "Write", "arguments": json.dumps(
                {"file_path": str(script),
                 "content": f"import hashlib\nprint(hashlib.sha256(b'{nonce}').hexdigest()[:16])\n"})}],
                chunk_size=7)
        last = results[-1]
        if last["tool_call_id"] == "call_write_1":
            return Reply(text="Now I will run it.", tool_calls=[{"id": "call_bash_2", "name": "Bash", "arguments": json.dumps(
                {"command": f"python3 {script}", "description": "Run the compute script"})}], chunk_size=5)
        if last["tool_call_id"] == "call_bash_2":
            content = last["content"]
            output = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            return Reply(text=f"The script printed: {output.strip()}", chunk_size=3)
        return Reply(text=f"unexpected conversation state: {last}")

    return respond, seen


def test_claude_code_writes_runs_and_reports_through_hookway(fake_upstream, start_gateway, tmp_path):
    import hashlib
    assert CLAUDE, "the Claude Code CLI must be installed in CI (HOOKWAY_CI is set)"
    nonce = secrets.token_hex(8)
    expected = hashlib.sha256(nonce.encode()).hexdigest()[:16]
    workdir = tmp_path / "project"
    workdir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    respond, seen = make_agent_script(workdir, nonce)
    fake_upstream.responder = respond

    gw = start_gateway({
        "plugins": {"openai": {}, "cerebras": {}, "anthropic": {}},
        "providers": {"cerebras": {"keys": [{"name": "c1", "value": "sk-fake-cerebras"}],
                                   "network_config": {"base_url": fake_upstream.url}}},
    })
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
           "HOME": str(home), "ANTHROPIC_BASE_URL": gw.url + "/anthropic",
           "ANTHROPIC_AUTH_TOKEN": "sk-hw-test", "ANTHROPIC_MODEL": "cerebras/llama-3.3-70b",
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": "cerebras/llama-3.3-70b",
           "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_AUTOUPDATER": "1"}
    proc = subprocess.run(
        [CLAUDE, "-p", "Write compute.py, run it with python3 and tell me what it printed.",
         "--allowedTools", "Bash,Write,Read,Edit", "--output-format", "json"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"claude failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout)
    assert result.get("is_error") is False, result
    assert (workdir / "compute.py").read_text().startswith("import hashlib")
    assert f"The script printed: {expected}" in result["result"]
    assert seen["agent_turns"] == 3
    # Every agent request reached the fake as a translated OpenAI body with Claude Code's tools.
    agent_bodies = [r.json for r in fake_upstream.requests if r.json and r.json.get("tools")]
    assert all(b["model"] == "llama-3.3-70b" and b["stream"] is True for b in agent_bodies)
    assert [m["tool_call_id"] for m in tool_messages(agent_bodies[-1])] == ["call_write_1", "call_bash_2"]
