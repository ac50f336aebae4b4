"""The one-topic examples under examples/ run end to end, each as its demo.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_demo(topic: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(EXAMPLES / topic / "demo.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("server stopped"), result.stdout
    return result


def test_echo_demo_calls_blocking_and_callback_style():
    out = run_demo("echo").stdout
    assert "blocking: hi\n" in out
    assert "callback-style: HI AGAIN!\n" in out  # two callbacks ran on the answer
    assert "structured: {'numbers': [1, 2, 3], 'raw': b'\\x00\\xff'}\n" in out


def test_greeter_demo_answers_each_user_from_one_viewable():
    out = run_demo("greeter").stdout
    assert out.count("alice: hello alice, you have greeted ") == 3
    assert "alice: hello alice, you have greeted 2 times\n" in out
    assert "bob:   hello bob, you have greeted 1 time\n" in out
    assert "alice: hello alice, you have greeted 3 times\n" in out  # callRemote form
    assert "shared state: 4 greetings from 2 users\n" in out


def test_replicated_demo_copy_stays_replica_follows():
    out = run_demo("replicated").stdout
    assert "copy    (RemoteReading): kitchen: 20.0 degrees, idle\n" in out
    assert "replica (RemoteThermostat): kitchen: 20.0 degrees, idle\n" in out
    assert "  (replica update: target 20.0 -> 23.5, heating)\n" in out
    assert "server updated 1 replica(s)\n" in out
    assert "copy after:    kitchen: 20.0 degrees, idle\n" in out  # a snapshot
    assert "replica after: kitchen: 23.5 degrees, heating\n" in out
    assert "  (replica update: target 23.5 -> 18.0, idle)\n" in out  # another client's change
    assert "replica after: kitchen: 18.0 degrees, idle\n" in out
    assert "a fresh copy:  kitchen: 18.0 degrees, idle\n" in out


def test_chat_demo_delivers_every_message_to_every_member():
    out = run_demo("chat").stdout
    assert "members of lobby: ['alice', 'bob']\n" in out
    for user in ("alice", "bob"):
        assert (f"{user} received: [lobby] <alice> hi bob\n"
                f"{user} received: [lobby] <bob> hello alice, how are you?\n"
                f"{user} received: [lobby] <alice> fine, thanks\n") in out
    assert "  [lobby] <bob> hello alice, how are you?\n" in out  # the server saw it
    assert "  alice logged out\n" in out and "  bob logged out\n" in out  # realm logouts


def test_twisted_server_demo_syncpb_client_of_a_twisted_server():
    pytest.importorskip("twisted")
    out = run_demo("twisted-server").stdout
    assert "titles: ['dune', 'emma']\n" in out
    assert "author of dune: Frank Herbert\n" in out
    assert "author of emma (callback style): Jane Austen\n" in out
    assert "a Twisted pb.Error arrives as Error: no book called 'ulysses'\n" in out
    assert "wrong password: refused (UnauthorizedLogin)\n" in out
    assert "alice borrowed dune\nalice borrowed emma\n" in out
    assert "alice's loans: ['dune', 'emma']\n" in out


def test_threads_demo_shares_one_connection_among_16_threads():
    out = run_demo("threads").stdout
    assert "waiting mode in a plain thread: thread\n" in out
    assert "16 threads x 50 calls: 800 answers, all correct\n" in out
    assert "server: 800 calls over 1 connection(s)\n" in out


def test_gevent_demo_slow_call_stalls_no_fast_call():
    pytest.importorskip("gevent")
    out = run_demo("gevent-program").stdout
    assert "wait mode in a greenlet: greenlet\n" in out
    assert "1 slow call and 20 fast calls from 21 greenlets on one connection\n" in out
    assert ("fast calls: 20 answers, all correct, places 1-20 in the server's answer order "
            "(20 answered while the slow call waited)\n") in out
    assert "slow call: place 21, finished after 20 fast answers\n" in out
