"""``syncpb serve`` and ``syncpb call`` end to end, in subprocesses: real
sockets, real signals, and every error exit code."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

import syncpb

from cliproc import Served, syncpb_run

pytestmark = pytest.mark.timeout(120)

SERVICE = textwrap.dedent('''
    import os
    import sys

    import gevent
    import gevent.event
    import syncpb

    class Calc(syncpb.Root):
        def remote_add(self, a, b):
            return a + b

        def remote_echo(self, value):
            return value

        def remote_divide(self, a, b):
            return a / b

        def remote_pid(self):
            return os.getpid()

        def remote_slow(self):
            print("slow call started", file=sys.stderr, flush=True)
            gevent.sleep(0.3)  # the server's work, finished after SIGTERM arrived
            return "finished"

        def remote_forever(self):
            gevent.event.Event().wait()

        def remote_crash(self):
            os._exit(3)

        def remote_reference(self):
            return syncpb.Referenceable()

    calculator = Calc()

    class Greeter(syncpb.Avatar):
        def __init__(self, name):
            self.name = name

        def perspective_hello(self):
            return "hello " + self.name

    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):
            return syncpb.IPerspective, Greeter(avatar_id.decode()), lambda: None

    realm = Realm()
    portal = syncpb.Portal(Realm(), [syncpb.InMemoryPasswordChecker(bob="builder")])
    not_servable = 42
''')


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "service.py").write_text(SERVICE)
    return tmp_path


@pytest.fixture
def calc(workdir: Path) -> Iterator[str]:
    with Served(["service:Calc", "--listen", "tcp://127.0.0.1:0"], workdir) as served:
        yield served.addresses()[0]
        assert served.stop() == 0


def call(address: str, *args: str, cwd: Path | None = None):
    return syncpb_run("call", address, *args, cwd=cwd)


# -- help and version --------------------------------------------------------------

def test_version_and_help_for_every_command() -> None:
    done = syncpb_run("--version")
    assert done.returncode == 0 and done.stdout.startswith("syncpb ")
    for command in ([], ["serve"], ["call"], ["users"], ["users", "add"], ["tls", "init"]):
        done = syncpb_run(*command, "--help")
        assert done.returncode == 0, command
        assert done.stdout.startswith("usage: syncpb"), command
    assert "exit codes" in syncpb_run("call", "--help").stdout


def test_usage_errors_exit_2() -> None:
    done = syncpb_run("frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    assert syncpb_run("call").returncode == 2


# -- call ------------------------------------------------------------------------------

def test_call_prints_json_results(calc: str) -> None:
    done = call(calc, "add", "1", "2")
    assert (done.returncode, done.stdout) == (0, "3\n")
    done = call(calc, "add", '"py"', '"pb"')
    assert json.loads(done.stdout) == "pypb"
    done = call(calc, "echo", '{"a": [1, 2.5, null, true]}')
    assert json.loads(done.stdout) == {"a": [1, 2.5, None, True]}


def test_call_round_trips_tagged_values(calc: str) -> None:
    tagged = {"$tuple": [{"$bytes": "aGk="}, {"$set": [1, 2]}, {"$decimal": "1.10"},
                         {"$datetime": "2026-12-06T10:00:00"}, {"$float": "nan"},
                         {"$dict": [[1, "one"], ["$x", 2]]}]}
    done = call(calc, "echo", json.dumps(tagged))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == tagged


def test_references_print_in_the_tagged_form(calc: str) -> None:
    done = call(calc, "reference")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert list(printed) == ["$ref"]
    assert printed["$ref"].startswith("<RemoteReference ")


def test_remote_error_goes_to_stderr_with_exit_1(calc: str) -> None:
    done = call(calc, "divide", "1", "0")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "remote error: builtins.ZeroDivisionError: division by zero" in done.stderr


def test_bad_json_exits_3(calc: str) -> None:
    done = call(calc, "echo", "hello")
    assert done.returncode == 3
    assert "a string needs JSON quotes" in done.stderr
    assert call(calc, "echo", '{"$nope": 1}').returncode == 3


def test_bad_address_exits_4() -> None:
    done = call("tcp:/127.0.0.1:1", "add")
    assert done.returncode == 4 and "error:" in done.stderr


def test_unreachable_server_exits_5(tmp_path: Path) -> None:
    done = call(f"unix://{tmp_path}/nobody.sock", "add")
    assert done.returncode == 5
    assert "cannot connect" in done.stderr


def test_timeout_exits_8(calc: str) -> None:
    done = syncpb_run("call", calc, "forever", "--timeout", "0.5")
    assert done.returncode == 8
    assert "--timeout 0.5" in done.stderr


def test_login_and_perspective_call(workdir: Path) -> None:
    (workdir / "pw").write_text("builder\n")
    (workdir / "wrong").write_text("digger\n")
    with Served(["service:portal", "--listen", "tcp://127.0.0.1:0"], workdir) as served:
        address = served.addresses()[0]
        done = syncpb_run("call", address, "hello", "--login", "bob",
                          "--password-file", str(workdir / "pw"))
        assert (done.returncode, json.loads(done.stdout)) == (0, "hello bob"), done.stderr
        done = syncpb_run("call", address, "hello", "--login", "bob",
                          "--password-file", str(workdir / "wrong"))
        assert done.returncode == 6 and "refused" in done.stderr
        done = syncpb_run("call", address, "hello", "--login", "bob",
                          "--password-file", str(workdir / "missing"))
        assert done.returncode == 10 and "password file" in done.stderr
        assert served.stop() == 0


def test_users_file_serves_a_realm_with_salted_logins(workdir: Path) -> None:
    users = workdir / "users"
    done = syncpb_run("users", "add", str(users), "carol", "--password-stdin", input="s3cret\n")
    assert done.returncode == 0, done.stderr
    assert oct(os.stat(users).st_mode & 0o777) == "0o600"
    (workdir / "pw").write_text("s3cret\n")
    with Served(["service:realm", "--users", str(users), "--listen", "tcp://127.0.0.1:0"],
                workdir) as served:
        address = served.addresses()[0]
        done = syncpb_run("call", address, "hello", "--login", "carol",
                          "--password-file", str(workdir / "pw"))
        assert json.loads(done.stdout) == "hello carol", done.stderr
        assert served.stop() == 0


# -- serve -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, code, message", [
    ("nosuchmodule:x", 7, "no module named 'nosuchmodule'"),
    ("service:nosuch", 7, "has no 'nosuch'"),
    ("service:not_servable", 7, "not something to serve"),
    ("service", 2, "is not MODULE:OBJECT"),
    ("service:realm", 2, "give --users FILE"),
])
def test_serve_refuses_what_it_cannot_serve(workdir: Path, spec: str, code: int,
                                            message: str) -> None:
    done = syncpb_run("serve", spec, "--listen", "tcp://127.0.0.1:0", cwd=workdir)
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_serve_address_errors(workdir: Path) -> None:
    done = syncpb_run("serve", "service:Calc", "--listen", "tcp://nohost", cwd=workdir)
    assert done.returncode == 4
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = syncpb_run("serve", "service:Calc", "--listen", f"tcp://127.0.0.1:{port}",
                          cwd=workdir)
    assert done.returncode == 5 and str(port) in done.stderr
    done = syncpb_run("serve", "service:Calc", cwd=workdir)
    assert done.returncode == 2 and "nothing to listen on" in done.stderr


def test_tls_files_that_do_not_load_exit_9(workdir: Path) -> None:
    (workdir / "bad.pem").write_text("not a certificate\n")
    done = syncpb_run("serve", "service:Calc", "--listen", "tls://127.0.0.1:0",
                      "--tls-cert", str(workdir / "bad.pem"), "--tls-key",
                      str(workdir / "bad.pem"), cwd=workdir)
    assert done.returncode == 9, done.stderr
    done = syncpb_run("serve", "service:Calc", "--listen", "tls://127.0.0.1:0", cwd=workdir)
    assert done.returncode == 2 and "--tls-cert" in done.stderr


def test_sigterm_lets_the_call_in_flight_finish(workdir: Path) -> None:
    with Served(["service:Calc", "--listen", f"unix://{workdir}/pb.sock"], workdir) as served:
        address = served.addresses()[0]
        caller = subprocess.Popen([sys.executable, "-m", "syncpb", "call", address, "slow"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        served.wait_for("slow call started")
        assert served.stop(signal.SIGTERM) == 0
        out, err = caller.communicate(timeout=30)
        assert (caller.returncode, out) == (0, '"finished"\n'), err
    assert any("SIGTERM received" in line for line in served.log)
    assert not (workdir / "pb.sock").exists()  # the socket file went with the server


def test_tcp_unix_and_tls_listeners_share_one_service(workdir: Path, tls_material) -> None:
    m = tls_material
    args = ["service:calculator", "--listen", "tcp://127.0.0.1:0",
            "--listen", f"unix://{workdir}/plain.sock", "--listen", "tls://127.0.0.1:0",
            "--listen", f"tls+unix://{workdir}/tls.sock",
            "--tls-cert", str(m.server.cert_path), "--tls-key", str(m.server.key_path)]
    with Served(args, workdir) as served:
        tcp, unix, tls, tls_unix = served.addresses(4)
        assert [call(a, "add", "2", "3").stdout for a in (tcp, unix)] == ["5\n", "5\n"]
        ca = ["--tls-ca", str(m.ca.cert_path)]
        done = syncpb_run("call", tls, "add", "2", "3", *ca)
        assert done.stdout == "5\n", done.stderr
        done = syncpb_run("call", tls_unix, "add", "2", "3", *ca, "--tls-host", "localhost")
        assert done.stdout == "5\n", done.stderr
        done = syncpb_run("call", tls, "add", "2", "3", "--tls-ca", str(m.other_ca.cert_path))
        assert done.returncode == 9 and "CertificateUntrusted" in done.stderr
        assert served.stop() == 0


def test_sighup_reloads_the_tls_certificate(workdir: Path, tls_material) -> None:
    m = tls_material
    cert, key = workdir / "server.pem", workdir / "server.key"
    shutil.copy(m.server.cert_path, cert)
    shutil.copy(m.server.key_path, key)
    args = ["service:calculator", "--listen", "tls://127.0.0.1:0",
            "--tls-cert", str(cert), "--tls-key", str(key)]
    with Served(args, workdir) as served:
        address = served.addresses()[0]
        assert syncpb_run("call", address, "add", "1", "1", "--tls-ca",
                          str(m.ca.cert_path)).stdout == "2\n"
        shutil.copy(m.untrusted_server.cert_path, cert)  # renewed, by another CA
        shutil.copy(m.untrusted_server.key_path, key)
        served.process.send_signal(signal.SIGHUP)
        served.wait_for("TLS certificate and key reloaded")
        done = syncpb_run("call", address, "add", "1", "1", "--tls-ca",
                          str(m.other_ca.cert_path))
        assert done.stdout == "2\n", done.stderr
        (workdir / "server.pem").write_text("garbage\n")
        served.process.send_signal(signal.SIGHUP)
        served.wait_for("could not be reloaded")
        assert syncpb_run("call", address, "add", "1", "1", "--tls-ca",
                          str(m.other_ca.cert_path)).stdout == "2\n"  # still the last good one
        assert served.stop() == 0


# -- several processes -----------------------------------------------------------------

def test_workers_share_a_port_and_a_crashed_worker_is_restarted(workdir: Path) -> None:
    with Served(["service:Calc", "--listen", "tcp://127.0.0.1:0", "--workers", "3"],
                workdir) as served:
        ready = served.wait_for(r"ready: 3 workers listening on")[0]
        address = ready.rsplit(" ", 1)[1]
        started = {int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in served.log
                   if "worker" in line and "started" in line}
        assert len(started) == 3
        seen = set()
        for _ in range(100):  # bounded: the kernel spreads connections by a hash
            seen.add(int(call(address, "pid").stdout))
            if len(seen) >= 2:
                break
        assert len(seen) >= 2 and seen <= started
        assert call(address, "crash").returncode == 5  # the worker died mid-call
        served.wait_for(r"exited with code 3 after .*; restarting it")
        served.wait_for(r"worker \d started")
        assert call(address, "add", "1", "2").stdout == "3\n"
        assert served.stop() == 0
    assert any("all workers stopped" in line for line in served.log)


def test_workers_refuse_a_unix_listener(workdir: Path) -> None:
    done = syncpb_run("serve", "service:Calc", "--listen", f"unix://{workdir}/x.sock",
                      "--workers", "2", cwd=workdir)
    assert done.returncode == 2
    assert "--workers cannot share a unix socket" in done.stderr


def test_a_worker_that_cannot_start_ends_the_command(workdir: Path) -> None:
    (workdir / "broken.py").write_text("import syncpb\nroot = syncpb.Root()\n")
    with socket.socket() as taken:  # no SO_REUSEPORT: the workers cannot bind beside it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = syncpb_run("serve", "broken:root", "--listen", f"tcp://127.0.0.1:{port}",
                          "--workers", "2", cwd=workdir)
    assert done.returncode == 5, done.stderr


def test_systemd_socket_activation(workdir: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    prefix = f"exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec"
    try:
        with Served(["service:calculator"], workdir, shell_prefix=prefix,
                    pass_fds=[fd]) as served:
            assert served.addresses()[0] == f"tcp://127.0.0.1:{port}"
            assert call(f"tcp://127.0.0.1:{port}", "add", "4", "5").stdout == "9\n"
            assert served.stop() == 0
        with Served(["service:calculator", "--listen", f"fd://{fd}"], workdir,
                    pass_fds=[fd]) as served:
            assert served.addresses()[0] == f"tcp://127.0.0.1:{port}"
            assert call(f"tcp://127.0.0.1:{port}", "add", "1", "5").stdout == "6\n"
            assert served.stop() == 0
    finally:
        listener.close()
    done = syncpb_run("serve", "service:calculator", "--listen", "fd://99", cwd=workdir)
    assert done.returncode == 4 and "fd://99" in done.stderr


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_serve_raises_the_heap_thresholds_unless_told_not_to(workdir: Path) -> None:
    for extra, tuned in (([], True), (["--no-tune-malloc"], False)):
        with Served(["service:Calc", "--listen", f"unix://{workdir}/heap{len(extra)}.sock",
                     "--log-level", "debug", *extra], workdir) as served:
            with syncpb.connect(served.addresses()[0], timeout=30) as conn:
                assert conn.root.add(1, 2) == 3  # serving (signal handlers set)
            assert served.stop() == 0
        assert any("heap thresholds raised" in line for line in served.log) is tuned, served.log
