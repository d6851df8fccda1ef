"""Canonical request/response <-> OpenAI chat-completions wire format.

``request_to_openai`` is the inverse of the dialect's parse (see CONFORMANCE.md "Request:
Anthropic -> OpenAI"); ``response_from_openai`` turns a whole OpenAI answer into an
:class:`hookway.ir.Response`. Both are plain functions so other plugins (anthropic, cerebras) can
use them in their own adapters and golden tests.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from hookway import ir

# OpenAI finish_reason -> canonical (Anthropic) stop_reason. Unknown values map to end_turn: a
# stop reason is never invented.
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Canonical stop_reason -> OpenAI finish_reason (for rendering to OpenAI clients).
STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}

# Extra request fields an OpenAI chat/completions upstream understands. Anything else in
# ``Request.extra`` came from another dialect (context_management, output_config, betas...) and
# is dropped rather than risking a 400 from the upstream.
CHAT_EXTRAS = frozenset({
    "seed", "response_format", "logit_bias", "logprobs", "top_logprobs", "n", "presence_penalty",
    "frequency_penalty", "store", "prediction", "modalities", "audio", "web_search_options",
    "verbosity", "prompt_cache_key", "safety_identifier",
})
COMPLETIONS_EXTRAS = frozenset({
    "suffix", "echo", "best_of", "logprobs", "n", "seed", "presence_penalty", "frequency_penalty",
    "logit_bias",
})
EMBEDDINGS_EXTRAS = frozenset({"dimensions", "encoding_format"})
# Anthropic also has a ``service_tier`` field, with other values: forward only OpenAI's.
OPENAI_SERVICE_TIERS = frozenset({"auto", "default", "flex", "priority", "scale"})


# Ids made on every translated stream: 96 random bits as 24 hex digits, like uuid4().hex[:24]. They
# must be unique, not unpredictable: the random module is enough (reseeded in forked workers), and
# uuid4 costs a system call each time.
def new_tool_id() -> str:
    return f"call_{random.getrandbits(96):024x}"


def new_message_id() -> str:
    return f"chatcmpl-{random.getrandbits(96):024x}"


def effort_for_budget(budget: int | None) -> str | None:
    """A reasoning effort for a token budget (Anthropic ``thinking.budget_tokens``), for
    providers that take an effort but no budget. Thresholds follow Claude Code's own levels:
    "think" ~4k, "think hard" ~10k, "ultrathink" ~32k."""
    if budget is None or budget <= 0:
        return None
    if budget <= 4096:
        return "low"
    if budget <= 16384:
        return "medium"
    return "high"


# --- usage ----------------------------------------------------------------------------------------

def usage_from_openai(u: dict | None) -> ir.Usage:
    """OpenAI usage -> canonical usage. OpenAI's ``prompt_tokens`` include the cached ones;
    the canonical (Anthropic) ``input_tokens`` do not, so the cached part is moved to
    ``cache_read_input_tokens``. Also reads the Responses API names (input_tokens...)."""
    if not isinstance(u, dict):
        return ir.Usage()
    prompt = u.get("prompt_tokens")
    if prompt is None:
        prompt = u.get("input_tokens")
    completion = u.get("completion_tokens")
    if completion is None:
        completion = u.get("output_tokens")
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    out_details = u.get("completion_tokens_details") or u.get("output_tokens_details") or {}
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    reasoning = (out_details.get("reasoning_tokens") or 0) if isinstance(out_details, dict) else 0
    prompt = int(prompt or 0)
    cached = int(cached or 0)
    return ir.Usage(input_tokens=max(prompt - cached, 0), output_tokens=int(completion or 0),
                    cache_read_input_tokens=cached, reasoning_tokens=int(reasoning or 0))


def usage_to_openai(usage: ir.Usage) -> dict:
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    out = {"prompt_tokens": prompt, "completion_tokens": usage.output_tokens,
           "total_tokens": prompt + usage.output_tokens,
           "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens}}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


# --- images ---------------------------------------------------------------------------------------

def image_block_from_url(url: str) -> dict:
    """An OpenAI ``image_url`` (http(s) or ``data:`` URL) as a canonical image block."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def image_part_from_block(block: dict) -> dict | None:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


# Content parts of OpenAI's own that have no canonical block; the dialect keeps them as they are
# and they are sent back unchanged to an OpenAI upstream.
RAW_OPENAI_PARTS = frozenset({"input_audio", "file"})


# --- request --------------------------------------------------------------------------------------

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _user_content(parts: list[dict]) -> str | list[dict]:
    """A plain string when all parts are text (many OpenAI-compatible servers accept only
    strings), otherwise the list of parts."""
    if all(p.get("type") == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _arguments(tool_input: Any) -> str:
    # The dialect keeps unparseable arguments as {"_raw": "..."}: send them back as they were.
    if isinstance(tool_input, dict) and len(tool_input) == 1 and isinstance(tool_input.get("_raw"), str):
        return tool_input["_raw"]
    return orjson.dumps(tool_input if tool_input is not None else {}).decode()


def messages_to_openai(system: list[dict], messages: list[dict], *, keep_thinking: bool = False) -> list[dict]:
    """Canonical system blocks and messages -> OpenAI chat messages."""
    out: list[dict] = []
    system_text = "\n\n".join(b.get("text", "") for b in system if b.get("type", "text") == "text" and b.get("text"))
    if system_text:
        out.append({"role": "system", "content": system_text})
    for msg in messages:
        role = msg.get("role")
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        content = content or []
        if role == "system":
            out.append({"role": "system", "content": _text(content)})
        elif role == "assistant":
            texts, tool_calls, reasoning = [], [], []
            for block in content:
                kind = block.get("type")
                if kind == "text":
                    texts.append(block.get("text", ""))
                elif kind == "tool_use":
                    tool_calls.append({"id": block.get("id") or new_tool_id(), "type": "function",
                                       "function": {"name": block.get("name", ""),
                                                    "arguments": _arguments(block.get("input"))}})
                elif kind == "thinking" and keep_thinking:
                    reasoning.append(block.get("thinking", ""))
                # thinking (for OpenAI targets) and redacted_thinking are dropped: OpenAI has no
                # place for another model's reasoning in the history.
            if not texts and not tool_calls:
                continue   # e.g. a turn that only held thinking: an empty message helps no one
            message: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            if reasoning:
                message["reasoning_content"] = "".join(reasoning)
            out.append(message)
        else:  # user (and anything unknown, treated as user)
            parts: list[dict] = []
            for block in content:
                kind = block.get("type")
                if kind == "tool_result":
                    result = block.get("content")
                    if isinstance(result, str):
                        result = [{"type": "text", "text": result}]
                    result = result or []
                    text = _text(result)
                    if block.get("is_error"):
                        text = f"Error: {text}" if text else "Error"
                    out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
                    # OpenAI tool messages carry text only: images of a result follow in the
                    # user message after the tool messages.
                    for inner in result:
                        if inner.get("type") == "image":
                            part = image_part_from_block(inner)
                            if part:
                                parts.append(part)
                elif kind == "text":
                    parts.append({"type": "text", "text": block.get("text", "")})
                elif kind == "image":
                    part = image_part_from_block(block)
                    if part:
                        parts.append(part)
                elif kind in RAW_OPENAI_PARTS:
                    parts.append(block)
            if parts:
                out.append({"role": "user", "content": _user_content(parts)})
    return out


def tool_choice_to_openai(choice: Any) -> Any:
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else choice
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return None


def request_to_openai(req: ir.Request, model: str, *, stream: bool | None = None,
                      supports_top_k: bool = False, budget_to_effort: bool = False,
                      max_tokens_field: str = "max_completion_tokens",
                      keep_thinking: bool = False, reasoning: bool = True) -> dict:
    """The OpenAI request body for ``req`` sent to ``model``.

    ``supports_top_k``: the target takes ``top_k`` (OpenAI does not). ``budget_to_effort``: the
    target takes ``reasoning_effort``, so a thinking budget without an explicit effort becomes
    one. ``max_tokens_field``: ``max_completion_tokens`` (OpenAI's current name; reasoning models
    refuse ``max_tokens``) or ``max_tokens`` for older servers. ``keep_thinking``: send earlier
    thinking back as ``reasoning_content`` (off for OpenAI, which has no such input).
    ``reasoning``: the target model takes ``reasoning_effort``; when False no effort is sent
    (a non-reasoning model may refuse the field)."""
    stream = req.stream if stream is None else stream
    op = req.operation
    if op == "embeddings":
        body = {"model": model, "input": req.input}
        body.update({k: v for k, v in req.extra.items() if k in EMBEDDINGS_EXTRAS})
        if req.user:
            body["user"] = req.user
        return body

    body: dict = {"model": model}
    if op == "completions":
        body["prompt"] = req.prompt if req.prompt is not None else _text(
            req.messages[-1].get("content") if req.messages else "")
        extras = COMPLETIONS_EXTRAS
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens   # the completions API knows only max_tokens
    else:
        body["messages"] = messages_to_openai(req.system, req.messages, keep_thinking=keep_thinking)
        extras = CHAT_EXTRAS
        if req.max_tokens is not None:
            body[max_tokens_field] = req.max_tokens
        if req.tools:
            tools = []
            for tool in req.tools:
                fn: dict = {"name": tool.name}   # byte-exact, never re-cased
                if tool.description:
                    fn["description"] = tool.description
                fn["parameters"] = tool.input_schema or {"type": "object", "properties": {}}
                tools.append({"type": "function", "function": fn})
            body["tools"] = tools
            choice = tool_choice_to_openai(req.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
            # OpenAI rejects parallel_tool_calls without tools, so only with them.
            if req.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = req.parallel_tool_calls
        if reasoning:
            effort = req.reasoning_effort
            if effort is None and budget_to_effort:
                effort = effort_for_budget(req.reasoning_budget)
            if effort:
                body["reasoning_effort"] = effort

    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None and supports_top_k:
        body["top_k"] = req.top_k
    if req.stop:
        body["stop"] = list(req.stop)
    if req.user:
        body["user"] = req.user
    for key, value in req.extra.items():
        if key in extras:
            body[key] = value
    tier = req.extra.get("service_tier")
    if tier in OPENAI_SERVICE_TIERS:
        body["service_tier"] = tier
    if stream:
        body["stream"] = True
        # Always ask for usage: the canonical stream reports it whether the client asked or not.
        body["stream_options"] = {"include_usage": True}
    return body


# --- response -------------------------------------------------------------------------------------

def parse_arguments(raw: Any) -> dict:
    """Tool-call arguments (a JSON string) as a dict; unparseable text kept as ``{"_raw": ...}``."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def stop_reason_for(finish: str | None, has_tool_use: bool) -> str:
    if has_tool_use:
        return "tool_use"   # whatever the upstream said (some say "stop" after tool calls)
    return FINISH_TO_STOP.get(finish or "stop", "end_turn")


def response_from_openai(data: dict, operation: str = "chat") -> ir.Response:
    """A whole OpenAI chat.completion (or text_completion) answer as an :class:`ir.Response`."""
    choices = data.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    content: list[dict] = []
    if operation == "completions":
        text = choice.get("text")
        if text:
            content.append({"type": "text", "text": text})
    else:
        message = choice.get("message") or {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
        text = message.get("content")
        if isinstance(text, list):   # a few servers answer with content parts
            text = _text(text)
        if text:
            content.append({"type": "text", "text": text})
        elif message.get("refusal"):
            content.append({"type": "text", "text": message["refusal"]})
        seen: set[str] = set()
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            call_id = call.get("id") or new_tool_id()
            if call_id in seen:
                call_id = new_tool_id()
            seen.add(call_id)
            content.append({"type": "tool_use", "id": call_id, "name": fn.get("name", ""),
                            "input": parse_arguments(fn.get("arguments"))})
    has_tool = any(b["type"] == "tool_use" for b in content)
    stop_sequence = choice.get("stop_reason") if isinstance(choice.get("stop_reason"), str) else None
    stop = stop_reason_for(choice.get("finish_reason"), has_tool)
    if stop == "end_turn" and stop_sequence:
        stop = "stop_sequence"   # vLLM-style servers name the matched stop string
    return ir.Response(id=data.get("id") or new_message_id(), model=data.get("model") or "",
                       content=content, stop_reason=stop,
                       stop_sequence=stop_sequence if stop == "stop_sequence" else None,
                       usage=usage_from_openai(data.get("usage")))
