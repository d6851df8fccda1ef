"""hookway-management: the Bifrost-compatible ``/api/providers`` API (add, update, delete providers
and their keys at run time, persisted in SQLite). See README.md."""

from .plugin import ManagementPlugin, redact

__all__ = ["ManagementPlugin", "redact"]
