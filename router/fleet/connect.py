"""A Redis client from the URL in the environment: `redis://`, `rediss://` (TLS: the server's
certificate is verified; `?ssl_ca_certs=/path/ca.pem` names a private CA), `unix://`,
or `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]` for Sentinel (the
password is the master's; `?sentinel_password=...` for Sentinels that ask for one).

The URL may carry a password, so it is read from the variable the config names and never
logged: `redacted` is the form that is. Timeouts are short, so a partition is noticed in
seconds; the one connection that blocks on the event stream gets a longer read timeout.
Redis Cluster is not supported (docs/fleet.md says why it is not needed).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from router.config import Fleet
from router.errors import ConfigError, Problem

SOCKET_TIMEOUT = 2.0  # a request Redis does not answer within this fails; callers retry
CONNECT_TIMEOUT = 2.0


def redis_url(fleet: Fleet, source: str) -> str:
    """The URL from the environment; a ConfigError naming the variable if it is unset."""
    url = os.environ.get(fleet.redis_url_env, "").strip()
    if not url:
        raise ConfigError(
            [
                Problem(
                    source,
                    "fleet.redis_url_env",
                    f"the environment variable {fleet.redis_url_env} is not set",
                    f"export {fleet.redis_url_env}=redis://HOST:6379/0 (rediss:// for TLS, "
                    "redis+sentinel://HOST:26379/SERVICE for Sentinel)",
                )
            ]
        )
    parts = urlsplit(url)
    scheme = parts.scheme
    try:
        if scheme != "redis+sentinel":  # a Sentinel URL lists several HOST:PORT
            parts.port  # noqa: B018 - raises ValueError when the address does not parse
    except ValueError:
        raise ConfigError(
            [
                Problem(
                    source,
                    "fleet.redis_url_env",
                    f"the URL in {fleet.redis_url_env} does not parse",
                    "percent-encode any '/', '#', '?' or '@' in the password "
                    "(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote("
                    'sys.argv[1], safe=""))\' PASSWORD)',
                )
            ]
        ) from None
    if scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
        raise ConfigError(
            [
                Problem(
                    source,
                    "fleet.redis_url_env",
                    f"{fleet.redis_url_env} holds a {scheme or 'scheme-less'} URL",
                    "use redis://, rediss://, unix:// or redis+sentinel://",
                )
            ]
        )
    return url


def redacted(url: str) -> str:
    """The URL with any password (in the address or the query) shown as ***."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:  # everything up to the last @ is the user and password, parsed or not
        userinfo, _, rest = rest.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        rest = f"{user}:***@{rest}"
    head, mark, query = rest.partition("?")
    if "password" in query:
        query = "***"
    return f"{scheme}{sep}{head}{mark}{query}"


def connect(url: str, *, read_timeout: float = SOCKET_TIMEOUT) -> Redis:
    """A client (connections open lazily). `read_timeout` must be longer than any BLOCK."""
    options = {
        "socket_timeout": read_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        return Redis.from_url(url, **options)  # type: ignore[arg-type]
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a Sentinel URL names its service: redis+sentinel://HOST:PORT/SERVICE")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, colon, port = item.rpartition(":")
        hosts.append((host, int(port)) if colon else (item, 26379))
    password = unquote(parts.password) if parts.password else None
    sentinel_password = parse_qs(parts.query).get("sentinel_password", [None])[0]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT, "password": sentinel_password},
        password=password,
        db=db,
        **options,
    )
    master: Redis = sentinel.master_for(service)
    return master
