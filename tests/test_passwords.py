"""The salted password file, its checker, the add-user command and salted logins."""

from __future__ import annotations

import subprocess
import sys

import pytest

import syncpb
from syncpb import banana, passwords
from syncpb.portal import SaltedResponse, UsernamePassword, proof

from rawpeer import OFFER, VERSION_6, HostileServer, read_choice_and_version
from test_portal import Realm

WAIT = 10.0

FAST = {"n": 2 ** 10, "r": 8, "p": 1}  # cheap scrypt for tests; real entries use 2**17


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "passwd"
    passwords.add_user(path, "alice", "wonderland", **FAST)
    passwords.add_user(path, "guest", "guest", **FAST)
    return path


def test_file_keeps_only_salted_hashes(password_file):
    text = password_file.read_text()
    assert "wonderland" not in text and text.count("\n") == 2
    assert (password_file.stat().st_mode & 0o777) == 0o600
    alice, guest = text.splitlines()
    assert alice.startswith("alice:scrypt:1024:8:1:") and guest.startswith("guest:scrypt:")
    passwords.add_user(password_file, "alice", "wonderland", **FAST)
    assert password_file.read_text().splitlines()[0] != alice  # a new salt every time


def test_checker_accepts_right_passwords_only(password_file):
    checker = syncpb.FilePasswordChecker(password_file)
    assert checker.requestAvatarId(UsernamePassword("alice", "wonderland")) == b"alice"
    for name, password in (("alice", "nope"), ("mallory", "wonderland")):
        with pytest.raises(syncpb.UnauthorizedLogin):
            checker.requestAvatarId(UsernamePassword(name, password))


def test_salted_proof_and_unknown_users(password_file):
    checker = syncpb.FilePasswordChecker(password_file)
    salt, n, r, p = checker.salt_for(b"alice")
    key = passwords.derive_key("wonderland", salt, n, r, p)
    assert checker.requestAvatarId(SaltedResponse(b"alice", b"c" * 16,
                                                  proof(key, b"c" * 16))) == b"alice"
    with pytest.raises(syncpb.UnauthorizedLogin):  # a proof for another challenge
        checker.requestAvatarId(SaltedResponse(b"alice", b"d" * 16, proof(key, b"c" * 16)))
    fake = checker.salt_for(b"mallory")
    assert fake == checker.salt_for(b"mallory") and fake[0] != salt  # stable, made up


def test_users_added_later_can_log_in_without_a_restart(password_file):
    checker = syncpb.FilePasswordChecker(password_file)
    passwords.add_user(password_file, "carol", "c4rol", **FAST)
    assert checker.requestAvatarId(UsernamePassword("carol", "c4rol")) == b"carol"


def test_a_broken_file_names_its_line(tmp_path):
    path = tmp_path / "passwd"
    path.write_text("alice:plain:secret\n")
    with pytest.raises(ValueError, match="passwd:1"):
        syncpb.FilePasswordChecker(path)


def test_add_user_command(tmp_path):
    path = tmp_path / "passwd"
    done = subprocess.run([sys.executable, "-m", "syncpb", "users", "add", str(path), "dave",
                           "--password-stdin"], input="s3cret\n", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dave added" in done.stdout
    checker = syncpb.FilePasswordChecker(path)
    assert checker.requestAvatarId(UsernamePassword("dave", "s3cret")) == b"dave"


def test_salted_login_over_tcp(password_file, server_factory, connect):
    portal = syncpb.Portal(Realm(), [syncpb.FilePasswordChecker(password_file)])
    _, address = server_factory(portal)
    conn = connect(address)
    alice = conn.login("alice", "wonderland", salted=True)
    assert alice.hello("Hi") == "Hi, alice!"
    with pytest.raises(syncpb.UnauthorizedLogin):
        conn.login("alice", "nope", salted=True)
    with pytest.raises(syncpb.UnauthorizedLogin):
        conn.login("mallory", "wonderland", salted=True)
    with pytest.raises(syncpb.UnhandledCredentials):  # PB's MD5 login can't be checked
        conn.login("alice", "wonderland")  # against salted hashes: no checker for it
    assert conn.login("guest", "guest", salted=True).hello("Hey") == "Hey, guest!"


def test_salted_login_needs_a_salted_checker(server_factory, connect):
    portal = syncpb.Portal(Realm(), [syncpb.InMemoryPasswordChecker(alice="wonderland")])
    _, address = server_factory(portal)
    with pytest.raises(syncpb.UnhandledCredentials, match="salted"):
        connect(address).login("alice", "wonderland", salted=True)


@pytest.mark.parametrize("params,why", [
    ((b"salt", 2 ** 30, 8, 1), "n=1073741824"),  # gigabytes of memory
    ((b"salt", 1000, 8, 1), "n=1000"),  # not a power of two
    ((b"salt", 1024, 8, 10 ** 6), "p=1000000"),  # minutes of work
    (("salt", 1024, 8, 1), "malformed"),
])
def test_client_refuses_hostile_scrypt_parameters(params, why):
    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.send(VERSION_6)
        call = stream.read_message()
        salt, n, r, p = params
        salt_tree = salt if isinstance(salt, bytes) else [b"unicode", salt.encode()]
        stream.send(banana.encode([b"answer", call[1],
                                   [b"tuple", b"c" * 16, salt_tree, n, r, p, [b"remote", 1]]]))
        return stream.read_until_closed()

    with HostileServer(script) as server:
        conn = syncpb.connect(server.address, timeout=WAIT)
        try:
            with pytest.raises(syncpb.ProtocolError, match=why):
                conn.login("alice", "wonderland", salted=True, timeout=WAIT)
        finally:
            conn.close()
