"""The served side of the live fuzzer (:mod:`fuzz_server`): the root object
the recorded Twisted sessions call, each method refusing bad input cleanly,
and the child process that serves it.

    python benchmarks/fuzz_served.py LOG [--lifetime SECONDS]

The server logs at INFO to ``LOG``, prints ``ADDR <address>`` once it
listens and stops (through ``server.stop``) when its stdin closes; an alarm
ends a child its parent lost after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from typing import Any, Callable, List, Optional

import syncpb
from syncpb.jelly import Writer

class Refused(syncpb.Error):
    """An expected failure of the fuzz root (a bad argument): not logged."""


def expected(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the method's own failures (and results with no plain PB form)
    into :class:`Refused`, so that every traceback in the log is syncpb's."""
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except syncpb.Error:
            raise
        except Exception as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from None
    return guarded


def plain(value: Any) -> Any:
    """``value`` if it travels with no connection (raises otherwise)."""
    Writer().jelly(value)
    return value


def is_plain(value: Any) -> bool:
    try:
        return plain(value) is value
    except (TypeError, syncpb.SyncPBError):
        return False


class Point(syncpb.Copyable):
    __module__ = "vectypes"  # the tag the recordings use: vectypes.Point

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class RemotePoint(syncpb.RemoteCopy):
    """A received point."""


class Counter(syncpb.Cacheable):
    __module__ = "vectypes"

    def __init__(self) -> None:
        self.value, self.observers = 0, syncpb.ObserverList()

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:  # noqa: N802
        self.observers.add(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:  # noqa: N802
        self.observers.discard(observer)


class Child(syncpb.Referenceable):
    @expected
    def remote_hello(self, *args: Any) -> str:
        return "hello"


class FuzzRoot(syncpb.Root):
    """The methods the recorded scenarios call, each refusing bad input cleanly."""

    def __init__(self) -> None:
        self.child, self.counter = Child(), Counter()

    @expected
    def remote_echo(self, value: Any = None) -> Any:
        return plain(value)

    @expected
    def remote_add(self, a: Any, b: Any) -> Any:
        return plain(a + b)

    @expected
    def remote_sumPoint(self, point: Any) -> Any:  # noqa: N802
        return plain(point.x + point.y)

    @expected
    def remote_getChild(self) -> Child:  # noqa: N802
        return self.child

    @expected
    def remote_getPoint(self) -> Point:  # noqa: N802
        return Point(10, 20)

    @expected
    def remote_getCounter(self) -> Counter:  # noqa: N802
        return self.counter

    @expected
    def remote_increment(self) -> int:
        self.counter.value += 1
        for d in self.counter.observers.notify("setValue", self.counter.value):
            if isinstance(d, syncpb.Deferred):  # (not in load_corpus's sans-IO run)
                d.addErrback(lambda failure: None)  # fuzz clients never answer
        return self.counter.value

    @expected
    def remote_isSame(self, a: Any = None, b: Any = None) -> bool:  # noqa: N802
        return a is b

    @expected
    def remote_isCounter(self, other: Any = None) -> bool:  # noqa: N802
        return other is self.counter

    @expected
    def remote_register(self, ref: Any = None) -> bool:
        return ref is not None


def registry() -> syncpb.UnjellyableRegistry:
    """Received points are built as RemotePoint."""
    registry = syncpb.default_registry.child()
    registry.register(b"vectypes.Point", RemotePoint)
    return registry


def serve(log_path: str, lifetime: float) -> int:
    """The child process: serve until stdin closes (or ``lifetime`` passes)."""
    signal.alarm(max(1, int(lifetime)))  # a lost child cannot linger
    logging.basicConfig(filename=log_path, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = syncpb.Server(FuzzRoot(), registry=registry())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    print(f"ADDR {address}", flush=True)
    sys.stdin.read()
    server.stop(timeout=10)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log")
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args(argv)
    return serve(args.log, args.lifetime)


if __name__ == "__main__":
    sys.exit(main())
