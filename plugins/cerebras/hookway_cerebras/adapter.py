"""The Cerebras adapter: the OpenAI-compatible adapter plus what Cerebras accepts differently.

Quirks (each applied in :meth:`CerebrasAdapter.prepare_body`, so on the pass-through path too):

* ``user`` longer than 64 characters is refused by Cerebras: it is dropped (Claude Code's
  ``metadata.user_id`` is much longer).
* ``reasoning_effort`` is sent as ``low``, ``medium`` or ``high``: other OpenAI values are mapped
  to the nearest (``minimal`` -> ``low``, ``xhigh``/``max`` -> ``high``); unknown values are
  dropped, and ``none`` too except for the models that take it (:attr:`effort_none_models`:
  zai-glm, qwen-3.8; gpt-oss refuses it).
* Cerebras takes no reasoning token budget: a budget (``reasoning.max_tokens``,
  ``thinking.budget_tokens``...) is removed and, when no effort was given, turned into one.
* Translated requests (Claude Code...) carry an effort only to the models that reason
  (:attr:`reasoning_models`, overridable with ``settings: {reasoning_models: [...]}``); an
  OpenAI client's own ``reasoning_effort`` on the pass-through is its choice and is kept
  (normalised as above).
* System message content must be a string: a list of text parts is joined.
* ``reasoning_content`` on assistant messages is refused (400 ``wrong_api_format``): removed.
* No ``stream_options``: Cerebras puts usage on the last chunk of every stream unasked, and some
  clients report a 422 for the field. A client's own ``stream_options`` is removed too.
* A 429 carries no ``retry-after``: the one passed on comes from ``x-ratelimit-reset-tokens-minute``
  (seconds until the per-minute token quota refills).
* No embeddings, images, speech, transcription or batch: 400 ``unsupported_operation``. The
  Responses API is answered by translation to chat completions.
"""

from __future__ import annotations

import fnmatch
import math

from hookway_openai.adapter import OpenAIAdapter
from hookway_openai.translate import effort_for_budget

USER_MAX_CHARS = 64

# Reasoning effort as the client said it -> what Cerebras accepts.
# "none" is not forwarded: dropped like an unknown value.
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high",
           "xhigh": "high", "max": "high"}

# Fields some clients use for a reasoning token budget; Cerebras rejects them all.
BUDGET_FIELDS = ("reasoning_budget", "thinking_budget", "max_reasoning_tokens", "budget_tokens")


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CerebrasAdapter(OpenAIAdapter):
    default_base_url = "https://api.cerebras.ai/v1"
    # Cerebras has no Responses API: Responses clients are answered through chat completions
    # (translated), never passed through.
    operations = frozenset({"chat", "completions", "responses"})
    passthrough = frozenset({"chat", "completions"})
    budget_to_effort = True     # Cerebras takes reasoning_effort (gpt-oss and other reasoning models)
    reasoning_models = ("gpt-oss*", "qwen-3*", "zai-glm*")
    # Models that take reasoning_effort "none" (reasoning off); gpt-oss takes only low/medium/high.
    effort_none_models = ("zai-glm*", "qwen-3.8*")
    usage_in_every_stream = True
    # The openai type's settings, but keep_thinking: prepare_body removes reasoning_content,
    # which Cerebras refuses, so the setting could only mislead.
    settings_schema = {**OpenAIAdapter.settings_schema,
                       "properties": {k: v for k, v in OpenAIAdapter.settings_schema["properties"].items()
                                      if k != "keep_thinking"}}

    def prepare_body(self, body: dict, operation: str) -> dict:
        user = body.get("user")
        if isinstance(user, str) and len(user) > USER_MAX_CHARS:
            del body["user"]
        body.pop("stream_options", None)
        if operation != "chat":
            return body
        self._reasoning(body)
        messages = body.get("messages")
        if isinstance(messages, list) and any(_needs_rewrite(m) for m in messages):
            body["messages"] = [_rewrite(m) if _needs_rewrite(m) else m for m in messages]
        return body

    def retry_after(self, resp) -> str | None:
        given = resp.headers.get("retry-after")
        if given or resp.status != 429:
            return given
        try:
            seconds = float(resp.headers.get("x-ratelimit-reset-tokens-minute", ""))
        except ValueError:
            return None
        return str(max(math.ceil(seconds), 1)) if math.isfinite(seconds) and seconds >= 0 else None

    def _reasoning(self, body: dict) -> None:
        effort = body.get("reasoning_effort")
        budget = None
        reasoning = body.pop("reasoning", None)        # OpenRouter style {"effort", "max_tokens"}
        if isinstance(reasoning, dict):
            if effort is None:
                effort = reasoning.get("effort")
            budget = _int(reasoning.get("max_tokens"))
        thinking = body.pop("thinking", None)          # Anthropic style {"type", "budget_tokens"}
        if isinstance(thinking, dict) and budget is None:
            budget = _int(thinking.get("budget_tokens"))
        for name in BUDGET_FIELDS:
            value = _int(body.pop(name, None))
            if budget is None:
                budget = value
        if effort is None and budget is not None:
            effort = effort_for_budget(budget)
        mapped = EFFORTS.get(effort.lower()) if isinstance(effort, str) else None
        if mapped is None and isinstance(effort, str) and effort.lower() == "none" \
                and _matches(body.get("model"), self.effort_none_models):
            mapped = "none"
        if mapped is None:
            body.pop("reasoning_effort", None)
        else:
            body["reasoning_effort"] = mapped


def _matches(model, patterns: tuple[str, ...]) -> bool:
    if not isinstance(model, str):
        return False
    name = model.lower()
    tail = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(tail, p) for p in patterns)


def _needs_rewrite(message) -> bool:
    return _system_with_parts(message) or (isinstance(message, dict) and "reasoning_content" in message)


def _rewrite(message: dict) -> dict:
    """A new message (the client's is left as it was): system parts joined, reasoning_content
    removed."""
    if _system_with_parts(message):
        message = _flatten_system(message)
    return {k: v for k, v in message.items() if k != "reasoning_content"}


def _system_with_parts(message) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "developer") \
        and isinstance(message.get("content"), list)


def _flatten_system(message: dict) -> dict:
    text = "\n\n".join(p.get("text", "") for p in message["content"] if isinstance(p, dict) and p.get("type") == "text")
    return {**message, "content": text}
