"""Gateway errors. Each dialect renders a :class:`GatewayError` in its own wire shape.

``kind`` is dialect-neutral; the table below gives its default HTTP status. Dialects map kinds to
their own error types (Anthropic ``invalid_request_error``, OpenAI ``invalid_request_error``...).
A transient upstream failure is never a 4xx: Claude Code retries 408/409/429/5xx and gives up on
any other 4xx.
"""

from __future__ import annotations

STATUS = {
    "invalid_request": 400,
    "unsupported_operation": 400,
    "authentication": 401,
    "billing": 402,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "api_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
    "overloaded": 529,
}

# Upstream HTTP status -> kind, for errors relayed from a provider.
_KIND_OF_STATUS = {
    400: "invalid_request", 401: "authentication", 402: "billing", 403: "permission",
    404: "not_found", 408: "timeout", 409: "api_error", 413: "request_too_large",
    422: "invalid_request", 429: "rate_limit", 500: "api_error", 502: "bad_gateway",
    503: "unavailable", 504: "timeout", 529: "overloaded",
}


class GatewayError(Exception):
    """An error to send to the client. ``retryable`` tells fallbacks and retries it is transient."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, param: str | None = None,
                 code: str | None = None, headers: dict | None = None, provider: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status or STATUS.get(kind, 500)
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.provider = provider

    @property
    def retryable(self) -> bool:
        return self.status in (408, 409, 429) or self.status >= 500

    def __repr__(self) -> str:
        return f"GatewayError({self.kind!r}, {self.message!r}, status={self.status})"


# ``GatewayError.code`` of a request longer than the model's context window, whatever the provider
# called it. Dialects word it so their clients recognise it: Claude Code compacts the conversation
# on Anthropic's "prompt is too long", OpenAI clients look for this code.
CONTEXT_OVERFLOW = "context_length_exceeded"

# How providers say it (OpenAI, Anthropic, Cerebras, vLLM, llama.cpp...), lower-cased.
_CONTEXT_OVERFLOW_PHRASES = ("context_length_exceeded", "prompt is too long", "maximum context length",
                             "context length", "context window", "reduce the length of the messages",
                             "exceed context limit", "exceeds the context")


def is_context_overflow(status: int, message: str) -> bool:
    if status not in (400, 413, 422):   # a 429 "too many tokens" is a rate limit, not this
        return False
    text = message.lower()
    return any(phrase in text for phrase in _CONTEXT_OVERFLOW_PHRASES)


def upstream_error(status: int, message: str, *, provider: str, retry_after: str | None = None,
                   code: str | None = None) -> GatewayError:
    """An error answer relayed from a provider, keeping its status class.

    Statuses the caller could not act on (e.g. 401 from the provider = our key is wrong) are kept as
    they are: the client sees the provider's verdict, named as such. A context-window overflow
    gets the code :data:`CONTEXT_OVERFLOW`, however the provider worded it."""
    if status in _KIND_OF_STATUS:
        kind = _KIND_OF_STATUS[status]
    else:
        kind = "api_error" if status >= 500 else "invalid_request"
    headers = {"retry-after": retry_after} if retry_after else None
    if is_context_overflow(status, message):
        code = CONTEXT_OVERFLOW
    return GatewayError(kind, f"{provider}: {message}", status=status, headers=headers, provider=provider,
                        code=code)


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, param=param)
