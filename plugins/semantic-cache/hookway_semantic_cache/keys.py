"""What identifies a cached answer: the normalised request, its hashes and its text.

Everything is computed from the canonical request (:class:`hookway.ir.Request`), so the same
question asked through the OpenAI or the Anthropic dialect lands on the same entry.

* The **partition** holds what must match exactly for any hit, direct or semantic: the cache key
  (``x-bf-cache-key``), the caller's scope, the operation, the model and provider (when the
  config keys by them) and every generation parameter (tools, temperature, max tokens...).
* The **exact hash** adds the conversation itself (system prompt, unless excluded, and messages).
* The **text** is what gets embedded for the semantic search.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from hookway import ir

# Request fields that do not change the answer (delivery, bookkeeping, provider-side caching).
IGNORED_EXTRA = frozenset({
    "metadata", "stream_options", "user", "store", "service_tier", "fallbacks", "prompt_cache_key",
    "prompt_cache_retention", "safety_identifier", "stream", "cache_control",
})

_DUMP = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=_DUMP, default=str)).hexdigest()


def _block(block: dict) -> dict | None:
    """A content block without what varies between identical questions (ids, cache marks,
    thinking signatures)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": (block.get("text") or "").strip()}
    if kind == "tool_use":
        return {"type": "tool_use", "name": block.get("name"), "input": block.get("input")}
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = [b for b in (_block(x) for x in content if isinstance(x, dict)) if b]
        return {"type": "tool_result", "content": content, "is_error": bool(block.get("is_error"))}
    if kind in ("thinking", "redacted_thinking"):
        return None   # earlier reasoning does not change the question
    return {k: v for k, v in block.items() if k not in ("cache_control", "id")}


def normalise_content(content: Any) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content.strip()}]
    if not isinstance(content, list):
        return []
    out = []
    for block in content:
        if isinstance(block, dict):
            b = _block(block)
            if b is not None and not (b.get("type") == "text" and not b["text"]):
                out.append(b)
    # Adjacent text blocks are one text: ["a", "b"] and "a\nb" ask the same thing.
    merged: list = []
    for b in out:
        if merged and b.get("type") == "text" and merged[-1].get("type") == "text":
            merged[-1] = {"type": "text", "text": merged[-1]["text"] + "\n" + b["text"]}
        else:
            merged.append(b)
    return merged


def normalise_messages(messages: list[dict]) -> list[dict]:
    return [{"role": m.get("role"), "content": normalise_content(m.get("content"))} for m in messages]


def has_tool_calls(req: ir.Request) -> bool:
    """True when the conversation carries tool calls or tool results (agent traffic)."""
    for message in req.messages:
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result",
                                                                      "server_tool_use"):
                    return True
    return False


def response_has_tool_calls(resp: ir.Response) -> bool:
    return any(isinstance(b, dict) and b.get("type") in ("tool_use", "server_tool_use") for b in resp.content)


def parameters(req: ir.Request) -> dict:
    """The generation parameters that change the answer."""
    return {
        "max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
        "top_k": req.top_k, "stop": sorted(req.stop) if req.stop else None,
        "tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                  for t in req.tools] or None,
        "tool_choice": req.tool_choice, "parallel_tool_calls": req.parallel_tool_calls,
        "reasoning_effort": req.reasoning_effort, "reasoning_budget": req.reasoning_budget,
        "extra": {k: v for k, v in req.extra.items() if k not in IGNORED_EXTRA} or None,
    }


def partition_of(req: ir.Request, *, cache_key: str, scope: str | None, operation: str,
                 model: str | None, provider: str | None) -> str:
    return digest({"key": cache_key, "scope": scope, "op": operation, "model": model,
                   "provider": provider, "params": parameters(req)})


def exact_hash(req: ir.Request, partition: str, *, include_system: bool) -> str:
    prompt = req.prompt if req.operation == "completions" else None
    return digest({"p": partition,
                   "system": normalise_content(req.system) if include_system else None,
                   "messages": normalise_messages(req.messages) if prompt is None else None,
                   "prompt": prompt})


def _text_of_block(block: dict) -> str:
    kind = block.get("type")
    if kind == "text":
        return block.get("text") or ""
    if kind == "tool_use":
        return f"[tool call {block.get('name')}: {orjson.dumps(block.get('input'), default=str).decode()}]"
    if kind == "tool_result":
        content = block.get("content")
        inner = content if isinstance(content, str) else " ".join(
            _text_of_block(b) for b in (content or []) if isinstance(b, dict))
        return f"[tool result: {inner}]"
    return ""


def conversation_text(req: ir.Request, *, include_system: bool, max_chars: int) -> str:
    """The text embedded for the semantic search: the system prompt (unless excluded) and every
    message, one per line with its role. Long texts keep their end (the latest question)."""
    lines = []
    if include_system and req.system:
        system = " ".join(_text_of_block(b) for b in req.system if isinstance(b, dict)).strip()
        if system:
            lines.append(f"system: {system}")
    if req.operation == "completions" and req.prompt is not None:
        prompt = req.prompt if isinstance(req.prompt, str) else " ".join(map(str, req.prompt))
        lines.append(prompt.strip())
    else:
        for m in req.messages:
            content = m.get("content")
            text = content if isinstance(content, str) else " ".join(
                _text_of_block(b) for b in (content or []) if isinstance(b, dict))
            text = text.strip()
            if text:
                lines.append(f"{m.get('role')}: {text}")
    text = "\n".join(lines)
    return text[-max_chars:] if len(text) > max_chars else text


# --- cached answers ----------------------------------------------------------------------------

def dump_response(resp: ir.Response) -> bytes:
    u = resp.usage
    return orjson.dumps({
        "id": resp.id, "model": resp.model, "content": resp.content, "stop_reason": resp.stop_reason,
        "stop_sequence": resp.stop_sequence,
        "usage": [u.input_tokens, u.output_tokens, u.cache_read_input_tokens,
                  u.cache_creation_input_tokens, u.reasoning_tokens],
    })


def load_response(data: bytes) -> ir.Response:
    d = orjson.loads(data)
    return ir.Response(id=d["id"], model=d.get("model") or "", content=d["content"],
                       stop_reason=d.get("stop_reason"), stop_sequence=d.get("stop_sequence"),
                       usage=ir.Usage(*d.get("usage", ())))


# --- header values -----------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float | None:
    """Seconds from ``30``, ``"30"``, ``"1.5"``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``,
    ``"1d"``; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(unit):
            number, factor = text[:-len(unit)], _UNITS[unit]
            break
    else:
        number, factor = text, 1
    try:
        seconds = float(number) * factor
    except ValueError:
        return None
    return seconds if seconds > 0 else None
