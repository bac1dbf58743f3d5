"""Fault-injecting TCP proxies on 127.0.0.1, each with its own event loop in a thread.

FaultProxy sits between the router and the fake provider. Each connection the router opens
gets the fault set at the moment it arrives:

    pass              pipe both ways
    hang              read the request, never answer
    reset_mid_body    forward the answer's first `after` bytes, then RST the connection
    close_mid_body    forward the answer's first `after` bytes, then close cleanly (FIN)
    drip              forward the answer one byte a second
    endless           answer 200 text/event-stream, then an event every 50 ms, forever

Partition sits between a client (a sidecar, a controller) and Redis: a plain TCP forwarder
whose cut() partitions the network for every connection, open or new, and heal() mends it.
See its docstring for the three ways to cut.

`open` counts the client connections that are still open, so a test can check that the
client let go of every broken one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar, get_args

T = TypeVar("T")
ENDLESS_HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n"
)
ENDLESS_EVENT = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "more "}}\n\n'
)
STOP_TIMEOUT = 10.0


class LoopServer:
    """A TCP server on 127.0.0.1 and a free port, run by its own event loop in a daemon thread.
    A subclass handles each connection in `_connection`; stop() closes every one of them.

    It accepts by hand rather than with asyncio.start_server: that one loses a connection
    accepted just before the server closes (its transport is made, fails an assertion and is
    never closed, so the client hangs), and stop() must close every connection."""

    def __init__(self) -> None:
        self.open = 0
        self.loop = asyncio.new_event_loop()
        # Each accepted socket, with its stream writer once it has one: stop() closes them all.
        self._connections: dict[socket.socket, asyncio.StreamWriter | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.listener.fileno(), self._accept)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STOP_TIMEOUT)

    def stop(self) -> None:
        """Close the server and every connection (FIN), then end the loop and its thread."""
        if self.loop.is_closed():
            return

        async def shutdown() -> None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            me = asyncio.current_task()
            for _ in range(100):  # cancelled tasks may still start others (a pipe's copies)
                await asyncio.sleep(0)
                others = asyncio.all_tasks() - {me}
                if not others:
                    break
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)
            for connection in list(self._connections):  # a task cancelled before it started
                self._forget(connection)
            await asyncio.sleep(0)  # the transports' closes run

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_TIMEOUT)
        self.loop.close()

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        connection.setblocking(False)
        self.open += 1
        self._connections[connection] = None
        task = self.loop.create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=connection)
            self._connections[connection] = writer
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._forget(connection)

    def _forget(self, connection: socket.socket) -> None:
        if connection not in self._connections:
            return
        writer = self._connections.pop(connection)
        self.open -= 1
        with contextlib.suppress(Exception):
            if writer is None:
                connection.close()
            else:
                writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FaultProxy(LoopServer):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fault = "pass"
        self.after = 0
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, fault: str, after: int = 0) -> None:
        self.fault, self.after = fault, after

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fault, after = self.fault, self.after
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
                        _reset(writer)
                    break
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if fault == "drip":
                    await asyncio.sleep(1.0)
            to_upstream.cancel()
        finally:
            up_writer.close()


CutMode = Literal["hold", "reset", "blackhole"]


class Partition(LoopServer):
    """A TCP forwarder from 127.0.0.1:`port` to 127.0.0.1:`upstream_port` (a Redis server)
    that partitions the network on cut() and mends it on heal(). Point the client at `port`.

    cut(mode) has taken effect when it returns:
      "hold" (default)  every open connection is reset (RST); new ones are accepted and held,
                        nothing forwarded: a client's connect succeeds and its commands time
                        out, so its own socket timeout decides how soon it notices.
      "reset"           every open connection is reset; new ones are reset as soon as they are
                        accepted: the client sees connection errors at once, as if Redis were
                        down.
      "blackhole"       nothing is reset: open and new connections stall, no byte goes either
                        way, as when a cable is pulled; only the client's timeouts notice. On
                        heal() the stalled bytes go through, as TCP would deliver them late.
    heal() lets traffic through again: held and stalled connections go on, new ones pass.
    Each connection dials the upstream when it starts to forward, so Redis may restart behind
    the forwarder; while it is down a new connection is accepted, then closed.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode: CutMode | None = None  # None: healed, traffic passes
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._ends: set[asyncio.StreamWriter] = set()  # both ends of every open connection
        super().__init__()

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def cut(self, mode: CutMode = "hold") -> None:
        if mode not in get_args(CutMode):
            raise ValueError(f"cut mode {mode!r}: use one of {', '.join(get_args(CutMode))}")
        self.call(self._cut(mode))

    def heal(self) -> None:
        self.call(self._heal())

    async def _cut(self, mode: CutMode) -> None:
        self.mode = mode
        self._flowing.clear()
        if mode != "blackhole":
            for end in list(self._ends):
                _reset(end)

    async def _heal(self) -> None:
        self.mode = None
        self._flowing.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        self._ends.add(writer)
        try:
            await self._flowing.wait()  # held while cut
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._ends.add(up_writer)
            try:
                await _until_either_ends(
                    self._forward(reader, up_writer), self._forward(up_reader, writer)
                )
            finally:
                self._ends.discard(up_writer)
                up_writer.close()
        finally:
            self._ends.discard(writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            await self._flowing.wait()  # stalled while cut
            writer.write(chunk)
            await writer.drain()


async def _until_either_ends(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run both directions of a connection until one of them ends; then stop the other."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with RST instead of FIN."""
    with contextlib.suppress(OSError):  # already closed
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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
