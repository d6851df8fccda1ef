"""Server-sent events: incremental, byte-exact parsing and framing.

The parser works on bytes and only decodes complete events, so a multi-byte UTF-8 character split
across network chunks is never mangled.
"""

from __future__ import annotations

from typing import Iterator


class SSEParser:
    """Feed raw bytes, get ``(event, data)`` pairs for every complete event.

    ``event`` is None when the event has no ``event:`` line. Comment lines are skipped. Both
    ``\\n`` and ``\\r\\n`` line endings are accepted."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[tuple[str | None, str]]:
        for event, data in self.feed_raw(chunk):
            yield event, data.decode("utf-8", "replace")

    def feed_raw(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Like :meth:`feed`, with the data left as bytes (orjson reads bytes) and a fast path for
        the usual one-line ``data: ...`` event: the hot path of translated streams."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2:]
        out = []
        for raw in buf[:end].split(b"\n\n"):
            if raw.startswith(b"data: ") and b"\n" not in raw:
                out.append((None, raw[6:]))
                continue
            event = None
            data_lines = []
            for line in raw.split(b"\n"):
                if not line or line[0] == 58:  # ':' comment
                    continue
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    data_lines.append(value)
                elif name == b"event":
                    event = value.decode()
            if data_lines or event:
                out.append((event, b"\n".join(data_lines)))
        return out

    @property
    def pending(self) -> bytes:
        return self._buf


def frame(data: bytes, event: str | None = None) -> bytes:
    """One SSE event from already-serialised JSON ``data``."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
