"""raw: length-prefixed echo over plain blocking TCP sockets -- the floor.

Frame: 4-byte big-endian length, then the payload. The server echoes every
frame back verbatim (no decoding, no dispatch), one greenlet per connection
under gevent, like syncpb's server. It is a transport floor only: no
serialization happens anywhere.

Payloads (fixed bytes, sized like what PB puts on the wire):

* W1/W4/W5/W6: 32 bytes (Twisted PB's ``callRemote("add", 12345, 1)`` frame)
* W2: 17,000 bytes (the Banana-encoded W2 call is ~17.3 KB)
* W3: the 256 KiB random blob
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

from . import common
from .common import perf

HDR = struct.Struct("!I")
RECV_SIZE = 1 << 20


def _parse_addr(addr: str):
    if not addr.startswith("tcp://"):
        raise ValueError(f"raw peer wants tcp://host:port, got {addr!r}")
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return host, int(port)


class FrameBuffer:
    """Receive buffer of one blocking socket: ``recv_into`` a preallocated
    bytearray, frames parsed in place (no per-call big allocations; the
    server echoes straight out of it)."""

    def __init__(self, sock, cap=RECV_SIZE):
        self.sock = sock
        self.buf = bytearray(cap)
        self.mv = memoryview(self.buf)
        self.start = 0  # first unconsumed byte
        self.end = 0    # end of received data

    def _make_room(self, need):
        """Ensure ``need`` bytes fit from ``start`` with room to receive."""
        live = self.end - self.start
        if self.start and (len(self.buf) - self.end < 65536 or need > len(self.buf) - self.start):
            tmp = bytes(self.mv[self.start:self.end])
            self.mv[:live] = tmp
            self.start, self.end = 0, live
        if need > len(self.buf) - self.start:
            self.mv.release()
            self.buf.extend(bytes(need - (len(self.buf) - self.start)))
            self.mv = memoryview(self.buf)

    def fill(self, need=0):
        if self.start == self.end:
            self.start = self.end = 0
        if need or self.end == len(self.buf) or len(self.buf) - self.end < 4096:
            self._make_room(max(need, self.end - self.start + 4096))
        n = self.sock.recv_into(self.mv[self.end:])
        if not n:
            raise ConnectionError("peer closed")
        self.end += n

    def complete(self):
        """Offset just past the last complete frame from ``start`` (== start
        if none), and the total size the next incomplete frame needs."""
        buf, pos, end = self.buf, self.start, self.end
        while end - pos >= 4:
            (n,) = HDR.unpack_from(buf, pos)
            if end - pos - 4 < n:
                return pos, 4 + n
            pos += 4 + n
        return pos, 0

    def frames(self):
        """Pop every complete frame currently buffered (payload bytes)."""
        stop, _ = self.complete()
        out = []
        pos = self.start
        mv = self.mv
        while pos < stop:
            (n,) = HDR.unpack_from(self.buf, pos)
            out.append(bytes(mv[pos + 4:pos + 4 + n]))
            pos += 4 + n
        self.start = stop
        return out

    def read_frame(self):
        """Block until one frame is complete; pop and return its payload."""
        while True:
            if self.end - self.start >= 4:
                (n,) = HDR.unpack_from(self.buf, self.start)
                if self.end - self.start - 4 >= n:
                    a = self.start + 4
                    self.start = a + n
                    return bytes(self.mv[a:a + n])
                self.fill(4 + n)
            else:
                self.fill()


def frame(payload: bytes) -> bytes:
    return HDR.pack(len(payload)) + payload


# ---------------------------------------------------------------- server

def _handle(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fb = FrameBuffer(sock)
    try:
        while True:
            stop, need = fb.complete()
            if stop > fb.start:
                # echo every complete frame, headers included, in one send
                sock.sendall(fb.mv[fb.start:stop])
                fb.start = stop
                continue
            fb.fill(need)
    except OSError:
        return
    finally:
        sock.close()


def serve(host):
    """A gevent server, one greenlet per connection: the same I/O model as
    syncpb's server (issue 14 defines the floor that way), so the ratio
    measures PB's own work, not gevent's."""
    from gevent.server import StreamServer

    server = StreamServer((host, 0), lambda conn, _addr: _handle(conn), backlog=128)
    server.start()
    common.announce(f"tcp://{host}:{server.server_port}")
    server.serve_forever()


# ---------------------------------------------------------------- client

def _connect(addr):
    sock = socket.create_connection(_parse_addr(addr), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _w5(sock, reader, payload, inflight, seconds, max_count):
    """Keep ``inflight`` frames outstanding: each batch of answers read is
    refilled by as many new frames in one send, until the bounds; then drain."""
    fr = frame(payload)
    sent = min(inflight, max_count)
    sock.sendall(fr * sent)
    done = 0
    t0 = perf()
    end = t0 + seconds
    while done < sent:
        reader.fill()
        got = reader.frames()
        for g in got:
            if len(g) != len(payload):
                raise common.BenchError("raw W5 bad frame")
        done += len(got)
        if got and perf() < end and sent < max_count:
            k = min(len(got), max_count - sent)
            sock.sendall(fr * k)
            sent += k
    return done, perf() - t0


class _Mux:
    """One socket shared by many threads: a send lock, a reader thread that
    routes answers by an 8-byte request id to the waiting caller."""

    def __init__(self, sock):
        self.sock = sock
        self.reader = FrameBuffer(sock)
        self.send_lock = threading.Lock()
        self.id_lock = threading.Lock()
        self.next_id = 0
        self.waiting = {}
        self.dead = None
        threading.Thread(target=self._read_loop, daemon=True).start()

    def _read_loop(self):
        try:
            while True:
                self.reader.fill()
                for g in self.reader.frames():
                    rid = int.from_bytes(g[:8], "big")
                    slot = self.waiting.pop(rid)
                    slot[1] = g
                    slot[0].release()
        except BaseException as e:  # noqa: BLE001
            self.dead = e
            for slot in list(self.waiting.values()):
                slot[0].release()

    def call(self, payload_tail: bytes, timeout: float):
        with self.id_lock:
            rid = self.next_id
            self.next_id += 1
        lock = threading.Lock()
        lock.acquire()
        slot = [lock, None]
        self.waiting[rid] = slot
        data = rid.to_bytes(8, "big") + payload_tail
        with self.send_lock:
            self.sock.sendall(HDR.pack(len(data)) + data)
        if not lock.acquire(timeout=timeout) or slot[1] is None:
            raise common.BenchError(f"raw mux call failed: {self.dead!r}")
        return slot[1]


def run_client(workload, addr, opts: common.Options):
    sock = _connect(addr)
    reader = FrameBuffer(sock)
    small = bytes(range(common.RAW_SMALL_SIZE))

    def seq_loop(payload):
        fr = frame(payload)
        plen = len(payload)

        def loop(seconds, max_count, verify):
            def step(i):
                sock.sendall(fr)
                got = reader.read_frame()
                if verify:
                    common.check_echo(payload, got, True)
                elif len(got) != plen:
                    raise common.BenchError("raw: short echo")
            return common.sequential(step, seconds, max_count)
        return loop

    try:
        if workload in ("W1", "W4"):
            calls, el = common.warm_then_measure(seq_loop(small), opts)
            return common.result(calls, el, f"blocking send/recv of a fixed "
                                 f"{len(small)}-byte frame", len(small))
        if workload == "W2":
            payload = make_records_standin()
            calls, el = common.warm_then_measure(seq_loop(payload), opts)
            return common.result(calls, el, f"fixed {len(payload)}-byte frame "
                                 "standing in for the records (no serialization)",
                                 len(payload))
        if workload == "W3":
            payload = common.make_blob()
            calls, el = common.warm_then_measure(seq_loop(payload), opts)
            return common.result(calls, el, "256 KiB frame", len(payload))
        if workload == "W5":
            def loop(seconds, max_count, verify):
                return _w5(sock, reader, small, opts.inflight, seconds, max_count)
            calls, el = common.warm_then_measure(loop, opts)
            return common.result(calls, el, f"{opts.inflight} {len(small)}-byte frames "
                                 "pipelined, refilled per batch of answers", len(small))
        if workload == "W6":
            mux = _Mux(sock)
            tail = small[8:]

            def make_step(t):
                def step(i):
                    got = mux.call(tail, opts.timeout)
                    if len(got) != len(small):
                        raise common.BenchError("raw W6 bad frame")
                return step
            calls, el = common.ThreadGroup.measure(opts.threads, make_step, opts)
            return common.result(calls, el, f"{opts.threads} threads share one socket "
                                 "(send lock + reader thread routing by request id)",
                                 len(small))
        raise ValueError(f"unknown workload {workload}")
    finally:
        try:
            sock.close()
        except OSError:
            pass


def make_records_standin() -> bytes:
    return common.make_blob(seed=2, size=common.RAW_RECORDS_SIZE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run through benchmarks/peer.py")
