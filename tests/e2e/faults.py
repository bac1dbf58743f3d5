"""A fault-injecting TCP proxy on 127.0.0.1, between the router and the fake provider.

It runs its own event loop in a thread. Each connection the router opens gets the fault
set at the moment it arrives:

    pass              pipe both ways
    hang              read the request, never answer
    reset_mid_body    forward the answer's first `after` bytes, then RST the connection
    close_mid_body    forward the answer's first `after` bytes, then close cleanly (FIN)
    drip              forward the answer one byte a second
    endless           answer 200 text/event-stream, then an event every 50 ms, forever

`open` counts the connections from the router that are still open, so a test can check that
the router let go of every broken one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

ENDLESS_HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n"
)
ENDLESS_EVENT = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "more "}}\n\n'
)


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fault = "pass"
        self.after = 0
        self.open = 0
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, fault: str, after: int = 0) -> None:
        self.fault, self.after = fault, after

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.open += 1
        fault, after = self.fault, self.after
        try:
            if fault == "hang":
                while await reader.read(65536):  # until the router gives up and closes
                    pass
            elif fault == "endless":
                await _read_request(reader)
                writer.write(ENDLESS_HEADERS)
                while True:
                    writer.write(ENDLESS_EVENT)
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                await self._pipe(reader, writer, fault, after)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            with contextlib.suppress(Exception):
                writer.close()
            self.tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: str, after: int
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            to_upstream = asyncio.ensure_future(_copy(reader, up_writer))
            sent = 0
            while True:
                chunk = await up_reader.read(1 if fault == "drip" else 65536)
                if not chunk:
                    break
                if fault in ("reset_mid_body", "close_mid_body") and sent + len(chunk) > after:
                    writer.write(chunk[: after - sent])
                    await writer.drain()
                    if fault == "reset_mid_body":  # RST instead of FIN
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                    break
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if fault == "drip":
                    await asyncio.sleep(1.0)
            to_upstream.cancel()
        finally:
            up_writer.close()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
