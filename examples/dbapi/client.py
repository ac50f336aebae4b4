"""Use the key-value store: blocking calls, a callback-style call, a
transaction that rolls back, lookups from many threads, the checksum.

    python client.py tcp://127.0.0.1:8820
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import syncpb

KEYS = 100
THREADS, LOOKUPS = 8, 50


def expected(i: int) -> str:
    return f"value-{i}"


def lookups(store: syncpb.RemoteReference, thread: int) -> int:
    """LOOKUPS blocking lookups from one thread; each answer is checked."""
    for n in range(LOOKUPS):
        i = (thread * LOOKUPS + n) % KEYS
        answer = store.lookup(f"key-{i:03d}")
        assert answer == expected(i), (i, answer)
    return LOOKUPS


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        store = conn.root
        for i in range(KEYS):  # blocking calls: each returns the server's answer
            store.put(f"key-{i:03d}", expected(i))
        print(f"stored {KEYS} keys; key-042 -> {store.lookup('key-042')}, "
              f"key-999 -> {store.lookup('key-999')}")

        d = store.callRemote("count")  # callback style: a Deferred at once
        d.addCallback(lambda n: f"{n} keys")
        print("count (callback style):", d.result(timeout=10))

        with ThreadPoolExecutor(THREADS) as threads:  # one connection, many threads
            done = sum(threads.map(lambda t: lookups(store, t), range(THREADS)))
        print(f"{THREADS} threads x {LOOKUPS} lookups: {done} answers, all correct")

        store.transfer("key-001", "moved")
        print("transfer key-001 -> moved: moved =", store.lookup("moved"))
        try:
            store.transfer("moved", "key-002")  # key-002 exists: the INSERT fails
        except syncpb.RemoteError as exc:
            print("transfer moved -> key-002 rolled back:", exc)
        print(f"nothing changed: moved = {store.lookup('moved')}, "
              f"key-002 = {store.lookup('key-002')}, {store.count()} keys")

        rows, digest = store.checksum()
        print(f"checksum (in the server's thread pool): {rows} rows, sha256 {digest[:16]}")


if __name__ == "__main__":
    main(sys.argv[1])
