"""A gevent program: many greenlets, one connection, one slow call.

    python client.py tcp://127.0.0.1:8835

Each greenlet makes a blocking call, which blocks only that greenlet
(no monkey-patching needed). The slow call's greenlet is spawned first, so
the server receives it first; the 20 fast calls are still answered before
it. The order is the server's: each answer carries its place in line.
"""

from __future__ import annotations

import sys

import gevent

import syncpb

FAST = 20


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        root = conn.root
        slow = gevent.spawn(root.slow, FAST)  # greenlets start in the order spawned
        fast = [gevent.spawn(root.fast, n) for n in range(FAST)]
        print("wait mode in a greenlet:", gevent.spawn(syncpb.wait_mode).get())
        done = gevent.joinall([slow, *fast], timeout=30, raise_error=True)
        if len(done) != FAST + 1:
            raise SystemExit(f"only {len(done)} of {FAST + 1} calls answered in 30 s")

        print(f"1 slow call and {FAST} fast calls from {FAST + 1} greenlets on one connection")
        answers = [g.get() for g in fast]  # all done: get() returns at once
        correct = all(a["square"] == n * n for n, a in enumerate(answers))
        places = sorted(a["place"] for a in answers)
        meanwhile = sum(a["slow_waiting"] for a in answers)
        print(f"fast calls: {len(answers)} answers, {'all' if correct else 'NOT all'} correct, "
              f"places {places[0]}-{places[-1]} in the server's answer order "
              f"({meanwhile} answered while the slow call waited)")
        result = slow.get()
        print(f"slow call: place {result['place']}, "
              f"{'finished' if result['finished'] else 'gave up'} after "
              f"{result['fast_meanwhile']} fast answers")


if __name__ == "__main__":
    main(sys.argv[1])
