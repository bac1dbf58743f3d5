"""The upstream side: one pooled aiohttp ClientSession per provider.

`Upstream.send` posts a prepared body and returns the provider's `Answer` with its headers
read. aiohttp's exceptions stop here, while the answer's body or stream is read too: they are
translated into the router's own errors (502 when the provider cannot be reached or breaks the
connection, 504 when it is too slow), the way httpx's `map_httpcore_exceptions` and
`ResponseStream` do at its transport boundary.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from router.config import Provider
from router.errors import RouterError, UpstreamTimeout, UpstreamUnavailable
from router.proxy.dialects import Dialect

CLIENT_KEY_HEADERS = ("authorization", "x-api-key")


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body: bytes
    headers: Mapping[str, str]


class Answer:
    """The provider's response to one request, its headers read. Reading the body or the
    stream raises the router's errors, never aiohttp's. `close()` ends it (a client that
    left ends the upstream request at once)."""

    __slots__ = ("_content", "_response", "_upstream", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, upstream: Upstream) -> None:
        self._response = response
        self._content = response.content
        self._upstream = upstream
        self.status = response.status
        self.headers = response.headers

    @property
    def is_event_stream(self) -> bool:
        return self._response.content_type == "text/event-stream"

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._upstream.translate(exc) from exc

    async def readany(self) -> bytes:
        """The next bytes of a stream as they arrive; b"" at its end."""
        try:
            return await self._content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._upstream.translate(exc) from exc

    def close(self) -> None:
        self._response.close()


class Upstream:
    """One provider: where it is, how to authenticate, and its connection pool."""

    def __init__(self, name: str, provider: Provider, dialect: Dialect) -> None:
        self.name = name
        self.provider = provider
        self.dialect = dialect
        self.base_url = provider.base_url.rstrip("/")
        self.url = self.base_url + dialect.upstream_path
        parts = urlsplit(provider.base_url)
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
        self._auth = dialect.auth_headers(api_key) if api_key else {}
        self._base_headers = {
            **dialect.default_headers(),
            "Content-Type": "application/json",
            **self._auth,
        }
        t = provider.timeouts
        self._json_timeout = aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=t.connect, sock_read=t.stream_idle
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.provider.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers_for(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        """The headers that go upstream: an allowlist of the client's, then ours.

        Host, X-Forwarded-* and everything not on the dialect's list stay behind. The
        client's own key goes upstream only when the provider allows pass-through and no
        router key is configured."""
        headers = dict(self._base_headers)
        for name in self.dialect.forward_headers:
            value = client_headers.get(name)
            if value is not None:
                headers[name] = value
        if self.provider.pass_client_key and not self._auth:
            for name in CLIENT_KEY_HEADERS:
                value = client_headers.get(name)
                if value is not None:
                    headers[name] = value
        return headers

    async def send(
        self, body: bytes, headers: Mapping[str, str], *, stream: bool, path: str | None = None
    ) -> Answer:
        """POST to the provider's endpoint for its dialect, or to `path` under base_url (the
        Responses API on an OpenAI provider)."""
        assert self._session is not None, "Upstream.start() was not awaited"
        try:
            response = await self._session.post(
                self.url if path is None else self.base_url + path,
                data=body,
                headers=headers,
                timeout=self._stream_timeout if stream else self._json_timeout,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.translate(exc) from exc
        return Answer(response, self)

    async def fetch(self, path: str, headers: Mapping[str, str]) -> Fetched:
        """GET `path` under base_url, read whole (a stored response)."""
        assert self._session is not None, "Upstream.start() was not awaited"
        try:
            async with self._session.get(
                self.base_url + path,
                headers=headers,
                timeout=self._json_timeout,
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                kept = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
                return Fetched(answer.status, body, kept)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.translate(exc) from exc

    def translate(self, exc: aiohttp.ClientError | asyncio.TimeoutError) -> RouterError:
        """aiohttp's error -> the router's error."""
        if isinstance(exc, asyncio.TimeoutError):
            what = (
                "accept a connection"
                if isinstance(exc, aiohttp.ConnectionTimeoutError)
                else ("answer")
            )
            return UpstreamTimeout(
                f"provider {self.name} ({self.where}) did not {what} in time; "
                f"timeouts are providers.{self.name}.timeouts in the config",
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnavailable(
                f"cannot connect to provider {self.name} at {self.where}: {exc.os_error}",
                code="upstream_connect_failed",
            )
        return UpstreamUnavailable(
            f"provider {self.name} ({self.where}) broke the connection: {type(exc).__name__}",
            code="upstream_connection_broken",
        )
