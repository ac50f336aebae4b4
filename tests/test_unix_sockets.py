"""Unix-socket listeners: safe with what is at the path, private by default,
and the kernel's word on who the peer is (SO_PEERCRED) for logins.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

import syncpb
from syncpb.unixsocket import MAX_PATH_BYTES

WAIT = 10.0


class Where(syncpb.Root):
    def __init__(self):
        self.brokers = []

    def rootObject(self, broker):  # noqa: N802 - Twisted's name
        self.brokers.append(broker)
        return self

    def remote_add(self, a, b):
        return a + b


def listen_fails(path, match):
    server = syncpb.Server(syncpb.Root())
    with pytest.raises(syncpb.ConnectionFailed, match=match) as info:
        server.listen(f"unix://{path}")
    server.stop()
    assert str(path) in str(info.value)
    return info.value


def test_a_regular_file_at_the_path_is_never_removed(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("precious")
    listen_fails(path, "regular file")
    assert path.read_text() == "precious"


def test_a_directory_at_the_path_is_never_removed(tmp_path):
    path = tmp_path / "adir"
    path.mkdir()
    (path / "inside").write_text("kept")
    listen_fails(path, "directory")
    assert (path / "inside").read_text() == "kept"


@pytest.mark.parametrize("target", ["file", "dead-socket"])
def test_a_symlink_at_the_path_is_never_followed_or_removed(tmp_path, target):
    real = tmp_path / "real"
    if target == "file":
        real.write_text("data")
    else:
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(real))
        dead.close()  # a socket file nobody listens on
    link = tmp_path / "link"
    link.symlink_to(real)
    listen_fails(link, "symlink")
    assert link.is_symlink() and os.path.lexists(real)


def test_a_live_servers_socket_is_never_taken_over(server_factory, connect, tmp_path):
    _, address = server_factory(Where(), unix=True)
    path = address[len("unix://"):]
    listen_fails(path, "a server is listening there")
    assert connect(address).root.add(1, 2) == 3  # the first server still serves


def test_a_dead_servers_socket_is_replaced(server_factory, connect, tmp_path):
    path = tmp_path / "s"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.listen(1)
    dead.close()  # the file stays behind, as after a crash
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    server = syncpb.Server(Where())
    address = server.listen(f"unix://{path}")
    server.start()
    try:
        with syncpb.connect(address, timeout=WAIT) as conn:
            assert conn.root.add(2, 3) == 5
    finally:
        server.stop()
    assert not os.path.lexists(path)  # removed on stop


def test_the_socket_file_is_private_unless_asked(tmp_path):
    server = syncpb.Server(Where())
    try:
        server.listen(f"unix://{tmp_path}/private")
        server.listen(f"unix://{tmp_path}/shared", mode=0o660)
        assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "shared").st_mode) == 0o660
    finally:
        server.stop()
    assert not os.path.lexists(tmp_path / "private")
    assert not os.path.lexists(tmp_path / "shared")


def test_stop_leaves_a_successors_socket_alone(tmp_path):
    path = tmp_path / "s"
    first = syncpb.Server(Where())
    first.listen(f"unix://{path}")
    os.unlink(path)                      # someone removed ours...
    successor = socket.socket(socket.AF_UNIX)
    successor.bind(str(path))            # ...and another server bound the path
    try:
        first.stop()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # not ours: left alone
    finally:
        successor.close()


def test_a_path_over_the_kernels_limit_is_refused_clearly(tmp_path):
    path = "/tmp/" + "x" * (MAX_PATH_BYTES - 4)
    listen_fails(path, f"the kernel's limit is {MAX_PATH_BYTES}")
    with pytest.raises(syncpb.ConnectionFailed, match="kernel's limit"):
        syncpb.connect(f"unix://{path}", timeout=WAIT)
    assert not os.path.lexists(path)


def test_both_ends_know_each_others_unix_credentials(server_factory, connect):
    root = Where()
    _, address = server_factory(root, unix=True)
    conn = connect(address)
    assert conn.root.add(1, 1) == 2
    me = (os.getpid(), os.getuid(), os.getgid())
    server_side = root.brokers[0].peer_info
    assert (server_side.unix.pid, server_side.unix.uid, server_side.unix.gid) == me
    client_side = conn.peer_info.unix
    assert (client_side.pid, client_side.uid, client_side.gid) == me  # the server is us


def test_tcp_peers_have_no_unix_credentials(server_factory, connect):
    root = Where()
    _, address = server_factory(root)
    conn = connect(address)
    assert conn.root.add(1, 1) == 2
    assert root.brokers[0].peer_info.unix is None
    assert conn.peer_info.unix is None and conn.peer_info.address == address


# ---------------------------------------------------------------- peer-credential login


class Account(syncpb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802 - Twisted's name
        return Account(avatar_id)


def test_a_unix_peer_logs_in_by_its_uid(server_factory, connect):
    portal = syncpb.Portal(Realm(), [syncpb.UnixPeerChecker(allowed_uids=[os.getuid()])])
    _, address = server_factory(portal, unix=True)
    avatar = connect(address).login_anonymous(timeout=WAIT)
    assert avatar.whoami() == pwd.getpwuid(os.getuid()).pw_name.encode()


def test_a_unix_peer_not_allowed_is_refused(server_factory, connect):
    portal = syncpb.Portal(Realm(), [syncpb.UnixPeerChecker(allowed_uids=[os.getuid() + 1],
                                                           allowed_gids=[os.getgid() + 1])])
    _, address = server_factory(portal, unix=True)
    with pytest.raises(syncpb.UnauthorizedLogin):
        connect(address).login_anonymous(timeout=WAIT)


def test_the_unix_peer_checker_refuses_tcp(server_factory, connect):
    portal = syncpb.Portal(Realm(), [syncpb.UnixPeerChecker()])
    _, address = server_factory(portal)
    with pytest.raises(syncpb.UnhandledCredentials):
        connect(address).login_anonymous(timeout=WAIT)


OTHER_USER = textwrap.dedent("""
    import json, os, sys
    import syncpb
    os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))   # become another user
    try:
        with syncpb.connect(sys.argv[1], timeout=10) as conn:
            print(json.dumps({"avatar": conn.login_anonymous(timeout=10).whoami().decode()}))
    except (syncpb.ConnectionFailed, syncpb.UnauthorizedLogin) as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
""")


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
@pytest.mark.parametrize("mode", [None, 0o666])
def test_another_user_is_kept_out_by_mode_or_let_in_by_uid(server_factory, mode):
    nobody = pwd.getpwnam("nobody")
    portal = syncpb.Portal(Realm(), [syncpb.UnixPeerChecker(allowed_uids=[nobody.pw_uid])])
    server, _ = server_factory(portal, start=False)
    # pytest's own temp directories are root-only: the other user could not
    # reach any socket in them, whatever its mode
    directory = tempfile.mkdtemp(prefix="syncpb-unix-")
    try:
        os.chmod(directory, 0o755)
        address = server.listen(f"unix://{directory}/pb", mode=mode)
        server.start()
        done = subprocess.run([sys.executable, "-c", OTHER_USER, address, str(nobody.pw_uid),
                               str(nobody.pw_gid)], capture_output=True, text=True, timeout=60)
        server.stop()
    finally:
        shutil.rmtree(directory)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    if mode is None:   # 0600: another user cannot even connect
        assert outcome["error"] == "ConnectionFailed" and "Permission denied" in outcome["message"]
    else:
        assert outcome == {"avatar": "nobody"}


def test_unix_connections_get_a_send_buffer_for_large_messages(server_factory, connect):
    from syncpb.unixsocket import SEND_BUFFER
    root = Where()
    _, address = server_factory(root, unix=True)
    conn = connect(address)
    assert conn.root.add(1, 1) == 2
    sock = conn._session.sock
    # Linux reports twice what was asked (it counts its own bookkeeping)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= SEND_BUFFER
