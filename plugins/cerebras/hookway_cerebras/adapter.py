"""The Cerebras adapter: the OpenAI-compatible adapter plus what Cerebras accepts differently.

Quirks (each applied in :meth:`CerebrasAdapter.prepare_body`, so on the pass-through path too):

* ``user`` longer than 64 characters is refused by Cerebras: it is dropped (Claude Code's
  ``metadata.user_id`` is much longer).
* ``reasoning_effort`` is sent as ``low``, ``medium`` or ``high``: other OpenAI values are mapped
  to the nearest (``minimal`` -> ``low``, ``xhigh``/``max`` -> ``high``); ``none`` and unknown
  values are dropped.
* Cerebras takes no reasoning token budget: a budget (``reasoning.max_tokens``,
  ``thinking.budget_tokens``...) is removed and, when no effort was given, turned into one.
* Translated requests (Claude Code...) carry an effort only to the models that reason
  (:attr:`reasoning_models`, overridable with ``settings: {reasoning_models: [...]}``); an
  OpenAI client's own ``reasoning_effort`` on the pass-through is its choice and is kept
  (normalised as above).
* System message content must be a string: a list of text parts is joined.
* No embeddings, images, speech, transcription or batch: 400 ``unsupported_operation``. The
  Responses API is answered by translation to chat completions.
"""

from __future__ import annotations

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

    def prepare_body(self, body: dict, operation: str) -> dict:
        user = body.get("user")
        if isinstance(user, str) and len(user) > USER_MAX_CHARS:
            del body["user"]
        if operation != "chat":
            return body
        self._reasoning(body)
        messages = body.get("messages")
        if isinstance(messages, list) and any(_system_with_parts(m) for m in messages):
            body["messages"] = [_flatten_system(m) if _system_with_parts(m) else m for m in messages]
        return body

    @staticmethod
    def _reasoning(body: dict) -> None:
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
        if mapped is None:
            body.pop("reasoning_effort", None)
        else:
            body["reasoning_effort"] = mapped


def _system_with_parts(message) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "developer") \
        and isinstance(message.get("content"), list)


def _flatten_system(message: dict) -> dict:
    text = "\n\n".join(p.get("text", "") for p in message["content"] if isinstance(p, dict) and p.get("type") == "text")
    return {**message, "content": text}
