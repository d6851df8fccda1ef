"""hookway-cerebras: the Cerebras provider (type ``cerebras``).

Cerebras speaks the OpenAI chat-completions format, so the adapter is the OpenAI one with
Cerebras quirks applied to every body sent upstream, translated or passed through.
"""

from __future__ import annotations

from hookway import hookimpl

from .adapter import CerebrasAdapter

__all__ = ["CerebrasPlugin", "CerebrasAdapter"]


class CerebrasPlugin:
    @hookimpl
    def hookway_config_schema(self):
        return {"type": "object", "additionalProperties": False, "properties": {}}

    @hookimpl
    def hookway_register_providers(self, register):
        register("cerebras", CerebrasAdapter)
