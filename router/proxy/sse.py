"""Server-sent events: split a byte stream into whole events without decoding it.

The relay forwards whole events only, so a client never sees half an event, and the
telemetry can read each event as it passes. Line ends may be CRLF, LF or CR (the SSE
spec allows all three); an event ends at the first empty line.
"""

from __future__ import annotations

import re

# Two line ends in a row. A lone CR must not be the first half of a CRLF.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


class EventSplitter:
    """Feed it chunks as they arrive; it returns the complete events, bytes unchanged.

    >>> s = EventSplitter()
    >>> s.feed(b"data: a\\n\\ndata: b")
    [b'data: a\\n\\n']
    >>> s.feed(b"\\n\\n")
    [b'data: b\\n\\n']
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        events: list[bytes] = []
        start = 0
        while True:
            match = _BOUNDARY.search(data, start)
            if match is None:
                break
            end = match.end()
            # A CR at the very end may be the first half of a CRLF still in flight.
            if end == len(data) and data.endswith(b"\r"):
                break
            events.append(data[start:end])
            start = end
        self._pending = data[start:]
        return events

    def flush(self) -> bytes:
        """What is left when the stream ends: an unterminated event, or b''."""
        rest, self._pending = self._pending, b""
        return rest


def event_fields(event: bytes) -> tuple[bytes, bytes | None]:
    """The `event:` name (b"" when absent) and the joined `data:` lines (None when absent)."""
    name = b""
    data: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, (b"\n".join(data) if data else None)
