"""The listening socket and its accept loop, with running out of file descriptors in view.

uvloop's own accept loop hides it: on EMFILE, libuv accepts each waiting connection and
closes it at once (its "EMFILE trick"), and tells nobody; clients see their connection
closed, `/healthz` included, and nothing is logged or counted. asyncio's own loop reports it
to the loop's exception handler; uvloop never does. So the router accepts connections itself,
as asyncio's loop does, and then hands each socket to the event loop
(`loop.connect_accepted_socket`). On EMFILE or ENFILE (or ENOBUFS, ENOMEM) it counts the
error in `ConnectionStats.accept_errors`, logs it at most once a minute, and stops accepting
for ACCEPT_RETRY_DELAY s (as nginx and asyncio do): waiting clients stay queued in the
listen backlog and are served once descriptors free up, rather than being cut off.

    runner = ProxyRunner(app, stats=ConnectionStats("proxy"), ...)
    await runner.setup()
    await ListenerSite(runner, "127.0.0.1", 8080).start()
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from typing import Any

from aiohttp import web

from router.proxy.connection import ClientConnection, ProxyRunner, ProxyServer, Throttle

log = logging.getLogger("router")
ACCEPT_RETRY_DELAY = 0.5
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ListenerSite(web.BaseSite):
    """A TCP site for a `ProxyRunner`, on the router's own accept loop."""

    def __init__(self, runner: ProxyRunner, host: str, port: int, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._sockets: list[socket.socket] = []
        self._retries: dict[socket.socket, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors = Throttle()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def server(self) -> ProxyServer:
        server = self._runner.server
        assert isinstance(server, ProxyServer), "ListenerSite serves a ProxyRunner"
        return server

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, _, _, _, address in dict.fromkeys(found):  # one socket per address
                sock = socket.create_server(address, family=family, backlog=self._backlog)
                sock.setblocking(False)
                self._sockets.append(sock)
                loop.add_reader(sock.fileno(), self._accept, sock)
        except OSError:  # e.g. the second of two addresses is taken: none stays open
            await self.stop()
            raise

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        for retry in self._retries.values():
            retry.cancel()
        self._sockets.clear()
        self._retries.clear()
        await super().stop()

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nobody else is waiting
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._out_of_resources(sock, exc)
                else:
                    log.error("accept() failed on %s: %s", self.name, exc)
                return
            conn.setblocking(False)
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        protocol = self.server()  # made and counted now, in the order of the accepts
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, conn))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._handed_over(done, conn, protocol))

    def _handed_over(
        self, task: asyncio.Task[Any], conn: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.warning("could not start a connection on %s: %s", self.name, task.exception())
        conn.close()
        if isinstance(protocol, ClientConnection):
            protocol.forget()  # counted when made, and it never started

    def _out_of_resources(self, sock: socket.socket, exc: OSError) -> None:
        stats = self.server.stats
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        stats.accept_errors[name] = stats.accept_errors.get(name, 0) + 1
        if (unlogged := self._errors.due()) is not None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.error(
                "cannot accept connections on the %s listener %s: %s (%s)%s; %d open client "
                "connections, open-file limit %d. Waiting clients stay queued and are accepted "
                "as descriptors free up. Raise the open-file limit (ulimit -n, LimitNOFILE, "
                "the container's nofile) or lower limits.max_connections",
                stats.listener,
                self.name,
                exc.strerror,
                name,
                f", {unlogged} more times since the last message" if unlogged else "",
                stats.open,
                soft,
            )
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())  # Linux keeps reporting it ready: pause instead
        self._retries[sock] = loop.call_later(ACCEPT_RETRY_DELAY, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._retries.pop(sock, None)
        if sock in self._sockets:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)
