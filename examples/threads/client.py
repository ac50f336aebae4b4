"""A legacy threaded program: 16 OS threads share one connection.

    python client.py tcp://127.0.0.1:8834

Plain ``threading.Thread``s, no gevent and no monkey-patching: each thread
makes blocking calls on the same RemoteReference, and each call blocks only
the thread that made it. Every answer is checked.
"""

from __future__ import annotations

import sys
import threading
from typing import Dict, List

import syncpb

THREADS, CALLS = 16, 50


def worker(root: syncpb.RemoteReference, number: int, start: threading.Barrier,
           answers: Dict[int, int], errors: List[str]) -> None:
    start.wait()  # every thread starts calling at once
    right = 0
    try:
        for n in range(CALLS):
            answer = root.multiply(number, n)  # blocks this thread only
            if answer == number * n:
                right += 1
            else:
                errors.append(f"thread {number}: {number} * {n} gave {answer}")
    except Exception as exc:  # report it; the summary will show the shortfall
        errors.append(f"thread {number}: {exc!r}")
    answers[number] = right


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10, call_timeout=30) as conn:
        print("waiting mode in a plain thread:", syncpb.wait_mode())
        answers: Dict[int, int] = {}
        errors: List[str] = []
        start = threading.Barrier(THREADS, timeout=30)
        threads = [threading.Thread(target=worker, args=(conn.root, i, start, answers, errors))
                   for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        right = sum(answers.values())
        verdict = "all correct" if right == THREADS * CALLS and not errors else f"{errors}"
        print(f"{THREADS} threads x {CALLS} calls: {right} answers, {verdict}")
        stats = conn.root.stats()
        print(f"server: {stats['calls']} calls over {stats['connections']} connection(s)")


if __name__ == "__main__":
    main(sys.argv[1])
