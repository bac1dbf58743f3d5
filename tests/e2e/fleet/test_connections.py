"""The ways to reach Redis besides a plain URL: TLS (`rediss://`, the server's certificate
checked against a private CA) and Sentinel (`redis+sentinel://`). A controller and two
sidecars on each; a change must reach both sidecars."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from router.dev.ports import free_port
from testing.fleet import Fleet, wait_for
from testing.redis import HOST, RedisServer, SentinelServer, require_redis
from testing.servers import ProviderProcess


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    if shutil.which("openssl") is None:
        missing = "openssl is not installed (Debian: apt-get install openssl)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "san.cnf"
    extensions.write_text(f"subjectAltName=IP:{HOST}\n")

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=bundle-router test CA",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(key), "-out", str(request), "-subj", f"/CN={HOST}",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return ca, cert, key


class TlsRedisServer(RedisServer):
    """A RedisServer that speaks only TLS, with a certificate from a private CA."""

    def __init__(self, tmp: Path) -> None:
        self.ca, self.cert, self.key = make_certificates(tmp / "certs")
        super().__init__(tmp, port=free_port(), name="redis-tls")

    def _config(self) -> str:
        plain = super()._config().replace(f"port {self.port}", "port 0")
        return plain + (
            f"tls-port {self.port}\ntls-cert-file {self.cert}\ntls-key-file {self.key}\n"
            f"tls-ca-cert-file {self.ca}\ntls-auth-clients no\n"
        )

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.ca),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def url_via(self, port: int) -> str:
        return f"rediss://{HOST}:{port}/0?ssl_ca_certs={self.ca}"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[ProviderProcess]:
    require_redis()
    fake = ProviderProcess(tmp_path)
    yield fake
    fake.stop()


def a_change_reaches_both(fleet: Fleet) -> None:
    answer = fleet.controller.admin(
        "POST", "/weights", {"route": "refund-agent", "weights": {"v1.4": 0, "v1.5": 100}}
    )
    assert answer["fleet"]["published"], answer
    epoch = answer["fleet"]["epoch"]
    for sidecar in fleet.sidecars:
        wait_for(f"{sidecar.name} at epoch {epoch}", lambda: sidecar.epoch() >= epoch)  # noqa: B023
        assert sidecar.served("refund-agent", n=5) == {"v1.5"}
        assert sidecar.status()["fleet"]["connected"]


def test_a_fleet_on_redis_over_tls(tmp_path: Path, provider: ProviderProcess) -> None:
    server = TlsRedisServer(tmp_path)
    try:
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            redis.Redis(host=HOST, port=server.port, ssl=True, socket_timeout=2).ping()
        fleet = Fleet(tmp_path / "fleet", provider.url, server.url, [("eu", "paid")] * 2)
        try:
            a_change_reaches_both(fleet)
        finally:
            fleet.stop()
    finally:
        server.stop()


def test_a_fleet_through_sentinel(tmp_path: Path, provider: ProviderProcess) -> None:
    """The URL names the Sentinel and the service; the password is the master's, and it
    appears in no log."""
    password = secrets.token_hex(12)
    master = RedisServer(tmp_path, password=password)
    sentinel = SentinelServer(tmp_path, master)
    url = f"redis+sentinel://:{password}@{HOST}:{sentinel.port}/{sentinel.master_name}"
    try:
        fleet = Fleet(tmp_path / "fleet", provider.url, url, [("us-east", "free")] * 2)
        try:
            a_change_reaches_both(fleet)
        finally:
            fleet.stop()
        for member in [*fleet.controllers, *fleet.sidecars]:
            text = member.router.process.output()
            assert "fleet test as" in text
            assert password not in text
    finally:
        sentinel.stop()
        master.stop()
