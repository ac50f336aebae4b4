"""Live mutation fuzzer of a syncpb Server (bounded in frames and time).

    python benchmarks/fuzz_server.py [--frames N] [--seconds S] [--seed N] [--workers N]

A ``syncpb.Server`` runs in a child process (:mod:`fuzz_served`; a crash is seen), logging at
INFO to a file; its root has the methods the recordings in tests/pb-vectors/
call. Fuzzing clients (threads, raw sockets) connect, send the handshake and
a prefix of a recorded client stream the server accepts (building state),
then frames mutated from the recordings, whole or in random pieces, each
followed by an echo call as a sentinel: the next frame goes out only once
it is answered, so each "input tried" reached a live connection. A
well-behaved client (``syncpb.connect``) calls echo and add meanwhile and
checks every answer. Exit status 1 unless the server is alive and answers,
its log has no traceback, "internal error", "Unhandled error" or ERROR line
(violations are WARNINGs), the good client saw no failure and every reply
was valid Banana.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import syncpb
from syncpb import banana
from syncpb.broker import Broker, CallReceived, ProtocolViolation
from syncpb.jelly import SecurityOptions, Writer

from fuzz_served import FuzzRoot, is_plain, registry  # noqa: E402 (benchmarks/ on sys.path)

VECTOR_DIR = Path(os.environ.get("SYNCPB_VECTORS",
                                 Path(__file__).resolve().parent.parent / "tests" / "pb-vectors"))
HANDSHAKE = bytes.fromhex("02827062028013870681")  # the choice 'pb', then ['version', 6]
SENTINEL_ID = 2**20 + 7
SENTINEL = banana.encode([b"message", SENTINEL_ID, b"root", b"echo", 1,
                          [b"tuple", [b"unicode", b"fuzz-end"]], [b"dictionary"]])
SENTINEL_REPLIES = ([b"answer", SENTINEL_ID], [b"error", SENTINEL_ID])
INTERESTING = (0x00, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0xFF)
TOKENS = (b"\x00\x80", b"\x01\x80", b"\x02\x80", b"\x07\x80", b"\x00\x81", b"\x7f\x81",
          b"\x00\x82", b"\x05\x82hello", b"\x01\x83", b"\x84" + struct.pack(">d", float("nan")),
          b"\x7f" * 9 + b"\x85", b"\x7f" * 70 + b"\x81", b"\x00\x87", b"\x7f\x87",
          ) + tuple(bytes((i, 0x87)) for i in range(1, 31))
HUGE = (2**60, 10**12, 640 * 1024, 640 * 1024 + 1, 2**31, 2**447)
#: Log lines that must not be there (a record is "date time LEVEL name: message";
#: peer data only ever appears in a message, as a repr).
BAD_LOG = re.compile(r"^Traceback \(most recent call last\)|^\S+ \S+ (ERROR|CRITICAL) "
                     r"|^\S+ \S+ \S+ \S+: (internal error|Unhandled error)")


# ------------------------------------------------------------------ mutations

@dataclass
class Corpus:
    scripts: List[List[bytes]]  # each scenario's client frames after the handshake
    accepted: List[int]  # how many of them a fresh server takes without a violation
    frames: List[bytes]  # every recorded frame, both directions
    values: List[Any]  # the values the recorded clients echo


def accepted_prefix(script: List[bytes], values: List[Any]) -> int:
    """Frames of ``script`` the fuzz root accepts in a row (sans-IO broker);
    adds the values they echo to ``values``."""
    broker = Broker(root=FuzzRoot(), security=SecurityOptions(registry=registry()))
    broker.receive_data(HANDSHAKE)
    for count, frame in enumerate(script):
        for event in broker.receive_data(frame):
            if isinstance(event, ProtocolViolation):
                return count
            if isinstance(event, CallReceived) and event.method.__name__ == "remote_echo":
                values += event.args[:1]
            if isinstance(event, CallReceived) and event.answer_required:
                try:
                    broker.answer(event.request_id, event.method(*event.args, **event.kwargs))
                except syncpb.Error as exc:
                    broker.fail(event.request_id, exc)
        broker.data_to_send()
    return len(script)


def load_corpus(directory: Path = VECTOR_DIR) -> Corpus:
    scripts, frames, values = [], [], []  # type: Tuple[List[Any], List[bytes], List[Any]]
    for path in sorted(directory.glob("*.json")):
        raw = [(f["dir"], bytes.fromhex(f["hex"])) for f in json.loads(path.read_text())["frames"]]
        scripts.append([data for way, data in raw if way == "c2s"][2:])
        frames += [data for _, data in raw]
    scripts = [s for s in scripts if s]
    accepted = [accepted_prefix(script, values) for script in scripts]
    return Corpus(scripts, accepted, frames, [v for v in values if is_plain(v)])


class Mutator:
    """Seeded mutations of recorded frames, and the plan of one connection."""

    def __init__(self, corpus: Corpus, seed: Any, per_connection: int = 16) -> None:
        self.corpus, self.rng, self.per_connection = corpus, random.Random(seed), per_connection

    def mutate(self, frame: bytes) -> bytes:
        rng, data = self.rng, bytearray(frame)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            op, where = rng.randrange(8), rng.randrange(len(data) + 1)
            if op == 0 and where < len(data):
                data[where] ^= 1 << rng.randrange(8)
            elif op == 1 and where < len(data):
                data[where] = rng.choice(INTERESTING)
            elif op == 2:
                data[where:where] = rng.choice(TOKENS)
            elif op == 3:
                del data[where:where + rng.randint(1, 8)]
            elif op == 4:
                del data[where:]
            elif op == 5:
                start = rng.randrange(len(data) + 1)
                data[where:where] = data[start:start + rng.randint(1, 64)]
            elif op == 6:
                self._huge_prefix(data)
            else:
                other = rng.choice(self.corpus.frames)
                data = data[:where] + other[rng.randrange(len(other) + 1):]
        return bytes(data)

    def _huge_prefix(self, data: bytearray) -> None:
        """Give a random token a huge length (or value) prefix."""
        kinds = [i for i, byte in enumerate(data) if byte >= 0x80]
        if kinds:
            start = end = self.rng.choice(kinds)
            while start and data[start - 1] < 0x80:
                start -= 1
            kind = self.rng.choice((data[end], 0x80, 0x82)) if data[end] <= 0x87 else 0x82
            data[start:end + 1] = banana.encode_prefix(self.rng.choice(HUGE)) + bytes((kind,))

    def plan(self) -> Tuple[bytes, List[bytes]]:
        """One connection: its opening (the handshake and an accepted prefix
        of a recorded script, which builds state) and its mutated frames."""
        rng, pick = self.rng, self.rng.randrange(len(self.corpus.scripts))
        if rng.random() < 0.03:  # the handshake itself
            return b"", [self.mutate(HANDSHAKE)]
        script = self.corpus.scripts[pick]
        start = at = rng.randint(0, min(self.corpus.accepted[pick], len(script) - 1))
        frames = []
        for _ in range(rng.randint(1, self.per_connection)):
            chance = rng.random()  # mostly the script's next frame: its state is there
            source = (script[at] if chance < 0.6 else rng.choice(script) if chance < 0.8
                      else rng.choice(self.corpus.frames))
            frames.append(self.mutate(source))
            at = min(at + 1, len(script) - 1)
        return HANDSHAKE + b"".join(script[:start]), frames

    def pieces(self, data: bytes) -> List[bytes]:
        """``data`` whole, or cut in random pieces."""
        if self.rng.random() < 0.5:
            return [data]
        out, pos = [], 0
        while pos < len(data):
            size = self.rng.choice((1, 2, 3, 5, 8, 16, 64, 512))
            out.append(data[pos:pos + size])
            pos += size
        return out


# ------------------------------------------------------------------ the clients

class Stats:
    """Counters shared by the client threads, and a few notes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.notes: List[str] = []

    def add(self, note: str = "", **counts: int) -> None:
        with self.lock:
            self.counts.update(counts)
            if note and len(self.notes) < 20:
                self.notes.append(note)

    def claim(self, budget: int) -> bool:
        """Take one frame of the budget (given back with ``add`` if unsent)."""
        with self.lock:
            if self.counts["claimed"] >= budget:
                return False
            self.counts["claimed"] += 1
            return True


class Probe:
    """One raw connection: send, then read until the sentinel's answer."""

    def __init__(self, sock: socket.socket, mutator: Mutator, stats: Stats) -> None:
        self.sock, self.mutator, self.stats = sock, mutator, stats
        self.replies, self.answered, self.closed = banana.Decoder(), 0, False
        self.unframed = b""  # what the server holds of an unfinished message

    def exchange(self, data: bytes, deadline: float) -> Optional[bool]:
        """Send ``data`` and a sentinel call; None if the send failed, else
        whether the sentinel was answered within ``deadline`` seconds."""
        try:
            for piece in self.mutator.pieces(data + SENTINEL):
                self.sock.sendall(piece)
        except OSError:
            self.closed = True
            return None
        try:  # if the sentinel only completes part of a message, no answer will come
            self.unframed = banana.split_messages(self.unframed + data + SENTINEL)[1]
        except syncpb.SyncPBError:  # the server closes: wait for that
            self.unframed = b""
        if self.unframed:
            return False
        wanted, until = self.answered + 1, time.monotonic() + deadline
        while self.answered < wanted and not self.closed:
            left = until - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except OSError:
                chunk = b""
            self.closed = not chunk
            try:
                self.answered += sum(isinstance(t, list) and t[:2] in SENTINEL_REPLIES
                                     for t in self.replies.feed(chunk))
            except syncpb.SyncPBError as exc:
                self.stats.add(f"reply is not valid Banana: {exc}", bad_replies=1)
                return False
        return self.answered >= wanted


def fuzz_connection(address: Tuple[str, int], mutator: Mutator, stats: Stats, budget: int,
                    read_deadline: float) -> bool:
    """One fuzzing connection; False when the budget is spent."""
    if not stats.claim(budget):
        return False
    opening, frames = mutator.plan()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(address)
    except OSError as exc:
        sock.close()
        stats.add(f"connect failed: {exc}", connect_failures=1, claimed=-1)
        return True
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    probe, tried, survived = Probe(sock, mutator, stats), 0, 0
    try:
        for index, frame in enumerate(frames):
            if index and not stats.claim(budget):
                break
            answered = probe.exchange((b"" if index else opening) + frame, read_deadline)
            if answered is None:
                stats.add(claimed=-1)
                break
            tried += 1
            if not answered:
                break
            survived += 1
    finally:
        if mutator.rng.random() < 0.8:  # mostly an abrupt reset: no TIME_WAIT left behind
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    stats.add(tried=tried, connections=1, closed=int(probe.closed), answered=survived)
    return True


def fuzz_worker(address: Tuple[str, int], mutator: Mutator, stats: Stats, budget: int,
                stop: threading.Event, read_deadline: float) -> None:
    try:
        while not stop.is_set() and fuzz_connection(address, mutator, stats, budget,
                                                    read_deadline):
            pass
    except Exception as exc:  # a bug of the fuzzer: reported, never hidden
        stats.add(f"fuzz worker failed: {type(exc).__name__}: {exc}", fuzzer_errors=1)


def good_client(address: str, values: List[Any], seed: Any, stats: Stats,
                stop: threading.Event, pause: float) -> None:
    """Call echo (with the recorded values, shared and cyclic ones included,
    in random company) and add, and check every answer until ``stop``
    (``pause`` seconds between pairs leaves the server to the fuzzers)."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with syncpb.connect(address, timeout=10, call_timeout=30) as conn:
                while not stop.is_set():
                    value = rng.choice(values)
                    value = rng.choice((value, [value, rng.randrange(-2**64, 2**64), value],
                                        {"n": rng.random(), "s": "é✓" * rng.randrange(50)}))
                    got = conn.root.echo(value)
                    if Writer().jelly(got) != Writer().jelly(value):  # structure and sharing
                        stats.add(f"echo({value!r}) returned {got!r}", good_failures=1)
                    a, b = rng.randrange(-2**70, 2**70), rng.randrange(-2**70, 2**70)
                    if conn.root.add(a, b) != a + b:
                        stats.add(f"add({a}, {b}) was wrong", good_failures=1)
                    stats.add(good_calls=2)
                    stop.wait(pause)
        except Exception as exc:
            stats.add(f"good client: {type(exc).__name__}: {exc}", good_failures=1)
            stop.wait(0.5)  # then a fresh connection (bounded by stop)


# ------------------------------------------------------------------ the run

@dataclass
class Options:
    frames: int = 1_000_000  # mutated frames to try
    seconds: float = 1800.0  # upper bound of the run
    seed: int = 1
    workers: int = 16  # fuzzing client threads
    read_deadline: float = 0.05  # seconds to wait for a sentinel's answer
    good_pause: float = 0.01  # seconds between the good client's call pairs
    min_good_calls: int = 10  # the run goes on (within seconds) until the good client made these
    progress: float = 5.0  # seconds between progress lines on stderr
    log: Optional[str] = None  # the server's log (default: a new temporary file)


def report_text(report: Dict[str, Any]) -> str:
    lines = [f"{name:>26}: {value}" for name, value in report["figures"].items()]
    lines += [f"{name:>26}: {value}  (must be 0)" for name, value in report["must_be_0"].items()]
    lines += [f"  {count} x log: {kind}" for kind, count in report["log_problems"].items()]
    lines += [f"  note: {note}" for note in report["notes"]]
    return "\n".join(lines + ["RESULT: " + ("FAILED" if any(report["must_be_0"].values())
                                            else "OK")])


def start_server(log_path: str, lifetime: float) -> Tuple[subprocess.Popen, str]:
    """The child server process and its address."""
    env = dict(os.environ)
    package_root = str(Path(syncpb.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fuzz_served.py")),
                              log_path, "--lifetime",
                              str(lifetime)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env, text=True)
    line = child.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("ADDR "):
        child.kill()
        child.wait(30)
        raise RuntimeError(f"the server child did not start (it said {line!r})")
    return child, line.split()[1]


def stop_server(child: subprocess.Popen) -> Optional[int]:
    """Ask the child to stop (its stdin closes); kill it by PID if it will not."""
    try:
        child.stdin.close()  # type: ignore[union-attr]
        return child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=30)
        return None


def scan_log(path: str) -> Tuple[int, int, Dict[str, int]]:
    """Lines that must not be there, WARNING lines, and the problems by kind
    (a record's message and the exception ending its traceback)."""
    bad, warnings, head, last = 0, 0, "", ""
    kinds: collections.Counter[str] = collections.Counter()

    def blank(text: str) -> str:
        return re.sub(r"0x[0-9a-f]+|\('127\.0\.0\.1', \d+\)", "?", text.strip())

    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            matched = bool(BAD_LOG.search(line))
            bad += matched
            if line[:1].isdigit():  # a record: "date time LEVEL name: message"
                if head:
                    kinds[head] += 1
                last = blank(line.split(" ", 2)[2])
                head = last if matched else ""
                warnings += " WARNING " in line
            elif matched and not head:  # a traceback under a WARNING or INFO record
                head = "traceback under: " + last
            elif (head and line[:1].isalpha() and not line.startswith(
                    ("Traceback", "During handling", "The above exception"))):
                kinds[f"{head} | {blank(line)}"] += 1
                head = ""
    if head:
        kinds[head] += 1
    return bad, warnings, dict(kinds)


def answers(address: str) -> bool:
    """Does the server still answer a fresh, well-behaved connection?"""
    try:
        with syncpb.connect(address, timeout=10, call_timeout=10) as conn:
            return bool(conn.root.echo(["still", "here"]) == ["still", "here"]
                        and conn.root.add(2, 3) == 5)
    except Exception:
        return False


def run(options: Options) -> Dict[str, Any]:
    """Fuzz a fresh server child within ``options``' frames and seconds."""
    log_path = options.log or tempfile.mkstemp(prefix="syncpb-fuzz-", suffix=".log")[1]
    corpus, stats, stop = load_corpus(), Stats(), threading.Event()
    child, address = start_server(log_path, options.seconds + 120)
    try:
        host, port = address.rsplit("//", 1)[1].rsplit(":", 1)
        threads = [threading.Thread(target=fuzz_worker, daemon=True, args=(
            (host, int(port)), Mutator(corpus, f"{options.seed}/{i}"), stats, options.frames,
            stop, options.read_deadline)) for i in range(options.workers)]
        threads.append(threading.Thread(target=good_client, daemon=True, args=(
            address, corpus.values, f"good/{options.seed}", stats, stop, options.good_pause)))
        elapsed, crashed = drive(options, child, threads, stats, stop)
        alive = child.poll() is None and answers(address)
        crashed = crashed or int(child.poll() is not None)
    finally:
        stop.set()
        exit_status = stop_server(child)
    bad_lines, warnings, kinds = scan_log(log_path)
    counts = stats.counts
    figures = {"inputs tried": counts["tried"], "seconds": round(elapsed, 1),
               "frames/s": round(counts["tried"] / elapsed), "connections": counts["connections"],
               "closed by the server": counts["closed"], "sentinels answered": counts["answered"],
               "connect failures": counts["connect_failures"],
               "good-client calls": counts["good_calls"], "log WARNING lines": warnings,
               "log lines that must not be there": bad_lines,
               "server exit status": exit_status, "server log": log_path}
    must_be_0 = {"server crashes": crashed, "server not answering": int(not alive),
                 "uncaught exceptions in log": sum(kinds.values()),
                 "good-client failures": counts["good_failures"],
                 "replies not valid Banana": counts["bad_replies"],
                 "fuzzer errors": counts["fuzzer_errors"]}
    return {"figures": figures, "must_be_0": must_be_0, "log_problems": kinds,
            "notes": stats.notes}


def drive(options: Options, child: subprocess.Popen, threads: List[threading.Thread],
          stats: Stats, stop: threading.Event) -> Tuple[float, int]:
    """Run the client threads (the good one last) until the frames are
    tried and the good client made ``min_good_calls``, or time is up;
    print progress. Returns the seconds taken and 1 if the server died."""
    started = last = time.monotonic()
    for thread in threads:
        thread.start()
    counts, crashed = stats.counts, 0
    while ((any(t.is_alive() for t in threads[:-1])
            or counts["good_calls"] < options.min_good_calls)
           and time.monotonic() - started < options.seconds):
        if child.poll() is not None:
            crashed = 1
            break
        now = time.monotonic()
        if now - last >= options.progress:
            last = now
            print(f"[fuzz] {now - started:7.1f} s {counts['tried']:>9} frames "
                  f"{counts['tried'] / (now - started):6.0f} frames/s {counts['connections']:>8} "
                  f"conns {counts['good_calls']:>7} good calls {counts['good_failures']} failures",
                  file=sys.stderr, flush=True)
        stop.wait(0.2)
    stop.set()
    for thread in threads:
        thread.join(60)
    return time.monotonic() - started, crashed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in fields(Options):
        default = getattr(Options(), option.name)
        parser.add_argument("--" + option.name.replace("_", "-"), default=default,
                            type=str if default is None else type(default))
    args = vars(parser.parse_args(argv))
    report = run(Options(**args))
    print(report_text(report), flush=True)
    return 1 if any(report["must_be_0"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
