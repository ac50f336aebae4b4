"""The cost of one hand-off to a thread pool and back, against its anchors.

A call through ``syncpb.adapters.ThreadPool`` is a hand-off to a worker
thread and back; that, not the pool's bookkeeping, is most of what a pooled
database call costs beyond the query. This times a function that returns at
once, called and waited for back to back, in the same process and run:

* from a plain thread: ``ThreadPool.run(f)`` and ``ThreadPool.submit(f).result()``
  against ``concurrent.futures.ThreadPoolExecutor.submit(f).result()``;
* from a greenlet: ``ThreadPool.run(f)`` against gevent's own
  ``gevent.threadpool.ThreadPool.apply(f)`` (which only the thread owning its
  hub may use).

Each figure is the median of ``--rounds`` rounds of ``--calls`` calls (every
loop is bounded by its count). Usage::

    .venv/bin/python benchmarks/pool_handoff.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gevent  # noqa: E402
import gevent.threadpool  # noqa: E402

from syncpb.adapters import ThreadPool  # noqa: E402

SIZE = 8


def nothing() -> int:
    return 1


def repeat(call: Callable[[], object]) -> Callable[[int], None]:
    """A loop making ``call()`` n times, each waited for before the next."""
    def loop(n: int) -> None:
        for _ in range(n):
            call()
    return loop


def rate(loop: Callable[[int], None], calls: int) -> float:
    start = time.perf_counter()
    loop(calls)
    return calls / (time.perf_counter() - start)


def thread_rows(calls: int, rounds: int) -> Dict[str, float]:
    pool = ThreadPool(SIZE)
    executor = concurrent.futures.ThreadPoolExecutor(SIZE)
    loops: Dict[str, Callable[[int], None]] = {
        "syncpb ThreadPool.run": repeat(lambda: pool.run(nothing)),
        "syncpb ThreadPool.submit().result()": repeat(lambda: pool.submit(nothing).result()),
        "concurrent.futures submit().result() (anchor)":
            repeat(lambda: executor.submit(nothing).result()),
    }
    try:
        return measure(loops, calls, rounds)
    finally:
        pool.stop()
        executor.shutdown()


def greenlet_rows(calls: int, rounds: int) -> Dict[str, float]:
    pool = ThreadPool(SIZE)
    green_pool = gevent.threadpool.ThreadPool(SIZE)
    loops: Dict[str, Callable[[int], None]] = {
        "syncpb ThreadPool.run": repeat(lambda: pool.run(nothing)),
        "gevent ThreadPool.apply (anchor)": repeat(lambda: green_pool.apply(nothing)),
    }
    try:
        return gevent.spawn(measure, loops, calls, rounds).get()
    finally:
        pool.stop()
        green_pool.kill()


def measure(loops: Dict[str, Callable[[int], None]], calls: int,
            rounds: int) -> Dict[str, float]:
    samples: Dict[str, List[float]] = {name: [] for name in loops}
    for name, loop in loops.items():
        loop(min(calls, 1000))  # warm-up: threads started, code paths hot
    for _ in range(rounds):  # interleaved, so drift hits every row alike
        for name, loop in loops.items():
            samples[name].append(rate(loop, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    print(f"# Pool hand-off: {options.calls:,} calls x {options.rounds} rounds, "
          f"pools of {SIZE}, median calls/s")
    print(f"\nload average at start: {os.getloadavg()}\n")
    for caller, rows in (("plain thread", thread_rows(options.calls, options.rounds)),
                         ("greenlet", greenlet_rows(options.calls, options.rounds))):
        anchor = next(value for name, value in rows.items() if "anchor" in name)
        print(f"| caller: {caller} | calls/s | x anchor |\n|---|---:|---:|")
        for name, value in rows.items():
            print(f"| {name} | {value:,.0f} | {value / anchor:.2f}x |")
        print()
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
