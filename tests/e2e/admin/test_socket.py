"""The admin socket's set-up: it touches only what it created, refuses a path that is not a
socket, and with `admin_socket_group` / `admin_socket_mode` lets users other than the
router's own reach the socket (checked by connecting as another uid from a forked child)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing.servers import REPO, ProviderProcess, Router, router_config

NOBODY = 65534
NOBODYS_GROUP = pwd.getpwuid(NOBODY).pw_gid  # nogroup, on Debian
OTHER_GROUP = 4242  # a gid no user has


def status(router: Router) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "status", "--config", str(router.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def connect_as(uid: int, gid: int, groups: list[int], path: Path) -> str:
    """GET /status on the admin socket from a forked child running as `uid`. Returns the
    answer's status line, or the error that stopped the connection."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the other user, connect, report, and leave at once
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
                answer = sock.recv(200).split(b"\r\n")[0]
            os.write(write_end, answer)
        except BaseException as exc:  # reported to the parent, whatever it is
            os.write(write_end, f"{type(exc).__name__} {getattr(exc, 'errno', '')}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return reported


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder under /tmp that any user may pass through (pytest's own tmp is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="admin-socket-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_socket_in_a_shared_sticky_folder_leaves_the_folder_alone(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    router = start_router(router_config(fake.url, admin_socket=str(shared / "admin.sock")))
    assert mode(shared) == 0o1777
    assert stat.S_ISSOCK(os.lstat(shared / "admin.sock").st_mode)
    assert mode(shared / "admin.sock") == 0o600
    assert status(router).returncode == 0
    router.stop()
    assert mode(shared) == 0o1777
    assert not (shared / "admin.sock").exists()  # the router removed the socket it made


def test_a_missing_folder_is_created_private(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    path = tmp_path / "new" / "run" / "admin.sock"
    router = start_router(router_config(fake.url, admin_socket=str(path)))
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    assert status(router).returncode == 0


@pytest.mark.parametrize("kind", ["regular file", "folder", "symlink"])
def test_a_path_that_is_not_a_socket_is_refused_and_left_alone(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "admin.sock"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    if kind == "regular file":
        path.write_text("keep me")
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(notes)
    with pytest.raises(RuntimeError) as failed:
        start_router(router_config(fake.url, admin_socket=str(path)))
    message = str(failed.value)
    assert f"admin_socket: {path} is a {kind}, not a socket" in message, message
    assert "admin_socket: run/admin.sock" in message  # the fix
    assert notes.read_text() == "keep me"
    assert path.is_dir() if kind == "folder" else path.read_text() == "keep me"


def test_a_socket_left_by_a_killed_router_is_replaced(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url))
    router.kill()
    assert stat.S_ISSOCK(os.lstat(router.tmp / "run" / "admin.sock").st_mode)  # left behind
    router.start()
    assert status(router).returncode == 0


def test_a_stale_socket_of_another_user_is_refused(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as leftover:
        leftover.bind(str(path))  # bound, never listening: stale
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(RuntimeError) as failed:
        start_router(router_config(fake.url, admin_socket=str(path)))
    assert f"admin_socket: {path} is a socket owned by uid {NOBODY}" in str(failed.value)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_socket_group_and_mode_let_a_member_in_and_keep_others_out(
    fake: ProviderProcess, start_router: Callable[..., Router], open_folder: Path
) -> None:
    path = open_folder / "run" / "admin.sock"
    config = router_config(
        fake.url,
        admin_socket=str(path),
        admin_socket_group=grp.getgrgid(NOBODYS_GROUP).gr_name,
        admin_socket_mode="0660",
        admin_allow=["nobody"],
    )
    router = start_router(config)
    socket_stat = os.lstat(path)
    assert stat.S_IMODE(socket_stat.st_mode) == 0o660 and socket_stat.st_gid == NOBODYS_GROUP
    # The folder the router made lets the group pass through, and nobody else.
    assert mode(path.parent) == 0o710 and path.parent.stat().st_gid == NOBODYS_GROUP
    member = connect_as(NOBODY, NOBODYS_GROUP, [], path)
    assert member.startswith("HTTP/1.1 200"), member
    outsider = connect_as(NOBODY, OTHER_GROUP, [], path)  # the same uid, outside the group
    assert outsider == "PermissionError 13", outsider
    assert "cannot reach" not in router.process.output()  # nobody's group reaches it


def test_admin_allow_naming_a_user_who_cannot_reach_the_socket_is_warned(
    fake: ProviderProcess, start_router: Callable[..., Router], open_folder: Path
) -> None:
    path = open_folder / "run" / "admin.sock"
    router = start_router(router_config(fake.url, admin_socket=str(path), admin_allow=[NOBODY]))
    assert connect_as(NOBODY, NOBODY, [], path) == "PermissionError 13"
    warning = next(line for line in router.process.output().splitlines() if "cannot reach" in line)
    assert "admin_allow names nobody (uid 65534)" in warning, warning
    assert "admin_socket_group" in warning and "admin_socket_mode" in warning, warning


def test_an_unknown_socket_group_is_refused(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url, admin_socket_group="no-such-group")
    with pytest.raises(RuntimeError) as failed:
        start_router(config)
    assert "admin_socket_group: there is no group named 'no-such-group'" in str(failed.value)
