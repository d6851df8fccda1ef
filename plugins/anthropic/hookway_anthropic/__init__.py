"""hookway plugin: the Anthropic Messages API dialect, the Anthropic provider adapter, and the
Anthropic-shaped endpoints Claude Code uses (messages, count_tokens, models)."""

from .adapter import AnthropicAdapter, request_to_messages, response_from_message
from .dialect import AnthropicDialect
from .plugin import AnthropicPlugin
from .tokens import estimate_request

__all__ = ["AnthropicPlugin", "AnthropicDialect", "AnthropicAdapter", "request_to_messages",
           "response_from_message", "estimate_request"]
