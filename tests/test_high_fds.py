"""A threaded connection whose socket's descriptor is 1024 or more works.

``select()`` cannot wait on descriptors at or above ``FD_SETSIZE`` (1024), and
long-running services with many files or connections open get such numbers
for every new socket. The threaded session waits with ``poll()``; these tests
use up the low descriptors first so that the client's socket (and the
server's accepted one) land above 1024, then exercise each way the threaded
session waits: a call with a timeout (the leader waits with a deadline), a
Deferred waited on with ``result()`` (the leader also watches its wake-up
pipe) and an answer nobody waits for (the background reader).
"""

from __future__ import annotations

import os
import resource
import threading
from typing import Iterator, List

import pytest

import syncpb
from syncpb import tls

FD_SETSIZE = 1024


class Echo(syncpb.Root):
    def remote_echo(self, value: object) -> object:
        return value


@pytest.fixture
def low_fds_used() -> Iterator[None]:
    """Hold open descriptors until the next one is above FD_SETSIZE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_SETSIZE + 200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: List[int] = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            held.append(fd)
            if fd >= FD_SETSIZE + 8:
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["tcp", "tls", "unix"])
def test_threaded_calls_work_on_a_socket_above_fd_setsize(low_fds_used, server_factory,
                                                          connect, tls_material, kind) -> None:
    server, address = server_factory(Echo(), start=False, unix=kind == "unix")
    options = {}
    if kind == "tls":
        address = server.listen("tls://127.0.0.1:0", tls=tls.server_context(
            cert=tls_material.server.cert_path, key=tls_material.server.key_path))
        options["tls"] = tls.client_context(ca=tls_material.ca.cert_path)
    server.start()
    conn = connect(address, **options)
    fileno = conn._session.sock.fileno()
    assert fileno >= FD_SETSIZE, f"the client's socket got fd {fileno}"

    # A blocking call with a timeout: the leader waits for readability with a deadline.
    assert conn.root.call("echo", "deadline", timeout=10) == "deadline"
    assert conn.root.echo(b"plain") == b"plain"

    # A Deferred waited on: the leader also watches the wake-up pipe.
    assert conn.root.callRemote("echo", [1, 2]).result(timeout=10) == [1, 2]

    # Nobody waits: the background reader reads the answer and runs the callback.
    seen: List[object] = []
    done = threading.Event()

    def got(value: object) -> None:
        seen.append(value)
        done.set()

    conn.root.callRemote("echo", ("background",)).addCallback(got)
    assert done.wait(10), "the background reader never delivered the answer"
    assert seen == [("background",)]
    assert not conn.closed
