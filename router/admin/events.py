"""The page's live updates: `GET /ui/events`, a server-sent event stream per open page.

`Changes.signal` is called by the change core's listeners (`on_change`, `on_record`) under
its lock, and by the grid's watch: it must never block. It numbers the change and puts the
number into each open stream's own queue (bounded, no lock); a stream whose queue is full is
a client that stopped reading, and is dropped (its EventSource reconnects by itself and the
page refetches). Each stream sends

    event: change   data: {"seq": N}   at once on connect, then after every change (changes
                                       queued meanwhile are sent as one, the newest N)
    event: ping     data: {}           every PING_SECONDS of quiet, so a dead link shows

Why server-sent events and not a short poll: a change reaches an open page in the time of one
write (milliseconds), where a poll needs a request a second per page to stay within a second,
and a dropped link is seen by the browser's own EventSource, which also retries by itself.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

PING_SECONDS = 15.0
QUEUE_BOUND = 64  # changes waiting for one stream before it is dropped
RETRY_MS = 1000  # how soon an EventSource reconnects


class Stream:
    """One open event stream: its queue of change numbers (None: the stream ends)."""

    __slots__ = ("dropped", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue(QUEUE_BOUND)
        self.dropped = False


class Changes:
    def __init__(self) -> None:
        self.seq = 0
        self.streams: set[Stream] = set()
        self.dropped = 0  # streams dropped for not reading

    def signal(self) -> None:
        """The served state changed. Never blocks, never raises."""
        self.seq += 1
        for stream in list(self.streams):
            try:
                stream.queue.put_nowait(self.seq)
            except asyncio.QueueFull:
                self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        stream.dropped = True
        self.streams.discard(stream)
        self.dropped += 1

    def close(self) -> None:
        """End every stream (at shutdown, so that none holds the drain up)."""
        for stream in list(self.streams):
            self.streams.discard(stream)
            with contextlib.suppress(asyncio.QueueFull):
                stream.queue.put_nowait(None)
            stream.dropped = True  # a full queue: the handler ends at its next get

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
            }
        )
        await response.prepare(request)
        stream = Stream()
        self.streams.add(stream)
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await response.write(_change(self.seq))
            while not stream.dropped:
                try:
                    seq = await asyncio.wait_for(stream.queue.get(), PING_SECONDS)
                except TimeoutError:
                    await response.write(b"event: ping\ndata: {}\n\n")
                    continue
                while seq is not None and not stream.queue.empty():
                    seq = stream.queue.get_nowait()  # several changes: one refetch
                if seq is None or stream.dropped:
                    break
                await response.write(_change(seq))
        except ConnectionResetError:
            pass  # the page went away: nothing to tell it
        finally:
            self.streams.discard(stream)
        return response


def _change(seq: int) -> bytes:
    return f'event: change\ndata: {{"seq": {seq}}}\n\n'.encode()
