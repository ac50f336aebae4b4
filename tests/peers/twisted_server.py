"""A real Twisted PB server for syncpb's interop tests.

Usage::

    python twisted_server.py [--unsafe-tracebacks]

Listens on an ephemeral port on 127.0.0.1, prints exactly one line
``PORT <number>`` to stdout, then serves until stdin reaches EOF (the parent
closes it to stop the server) or SIGTERM/SIGINT arrives. Twisted's log goes
to stderr.

Every connection gets its own root object (``ConnectionRoot``) that knows its
broker. Its ``remote_`` methods:

    echo(x) -> x                    add(a, b) -> a + b
    echoKw(**kw) -> kw              echoArgs(*a, **kw) -> [list(a), kw]
    failValue()    raises ValueError('bad value')
    failPbError()  raises interop_types.MyError('custom pb error')
    failDeferred() Deferred failing with KeyError('missing')
    failCopyable() raises interop_types.CopyableError('copyable pb error', 17)
    slowAdd(a, b, delay) -> a + b, answered after `delay` seconds
    getRef() -> a new Greeter (remote_hello(name) -> 'hello ' + name)
    isSame(a, b) -> a is b
    refCount() -> objects this connection exports, not counting the root
    callMeBack(ref, *args) -> ref.callRemote('step', *args)
    callMeBackKw(ref, name, *args, **kw) -> ref.callRemote(name, *args, **kw)
    store(ref) -> None              keeps the client's reference
    callStored(name, *args) -> stored.callRemote(name, *args)
    dropStored() -> True            forgets it + gc.collect(), so decref is sent
    getPoint(x, y) -> interop_types.Point(x, y), sent by copy
    sumPoint(p) -> p.x + p.y; TypeError unless p arrived as a RemotePoint
    getCounter() -> this connection's interop_types.Counter (a Cacheable)
    increment() -> the new value, once every holder has applied the update
    isCounter(c) -> c is this connection's Counter (c came back as lcache)
    observerCount() -> holders of this connection's Counter still observing
    user(name) -> this connection's avatar `name` (AsReferenceable, as a
                  portal would hand it out); its board() is a shared Viewable
    download(collector, size) -> None; pages samples.big_blob(size) to the
                                 collector with util.StringPager
    pull(source) -> SHA-256 of all pages of util.getAllPages(source, 'pages')
    types() -> interop_types.sample_values()
    cycle() -> a list that contains itself
    shared() -> [a, a] with a = [1, 2]
"""

import argparse
import gc
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.spread import pb, util  # noqa: E402

import interop_types  # noqa: E402
import samples  # noqa: E402


class Greeter(pb.Referenceable):
    """A small object handed out by reference."""

    def remote_hello(self, name):
        return "hello " + name


class ConnectionRoot(pb.Referenceable):
    """The root object published on one connection."""

    def __init__(self, broker):
        self.broker = broker
        self.counter = interop_types.Counter()
        self.board = interop_types.Board()
        self.users = {}
        self.stored = None

    # -- plain values ------------------------------------------------------

    def remote_echo(self, x):
        return x

    def remote_add(self, a, b):
        return a + b

    def remote_echoKw(self, **kw):
        return kw

    def remote_echoArgs(self, *args, **kw):
        return [list(args), kw]

    def remote_types(self):
        return interop_types.sample_values()

    def remote_cycle(self):
        return interop_types.make_cycle()

    def remote_shared(self):
        return interop_types.make_shared()

    # -- errors ------------------------------------------------------------

    def remote_failValue(self):
        raise ValueError("bad value")

    def remote_failPbError(self):
        raise interop_types.MyError("custom pb error")

    def remote_failDeferred(self):
        d = defer.Deferred()
        reactor.callLater(0, d.errback, KeyError("missing"))
        return d

    def remote_failCopyable(self):
        raise interop_types.CopyableError("copyable pb error", 17)

    # -- copies --------------------------------------------------------------

    def remote_getPoint(self, x, y):
        return interop_types.Point(x, y)

    def remote_sumPoint(self, p):
        if not isinstance(p, interop_types.RemotePoint):
            raise TypeError(f"expected a RemotePoint, got {type(p).__name__}")
        return p.x + p.y

    # -- caches --------------------------------------------------------------

    def remote_getCounter(self):
        return self.counter

    def remote_increment(self):
        return self.counter.increment()

    def remote_isCounter(self, c):
        return c is self.counter

    def remote_observerCount(self):
        return len(self.counter.observers)

    # -- views ---------------------------------------------------------------

    def remote_user(self, name):
        if name not in self.users:
            avatar = interop_types.User(name, self.board)
            self.users[name] = pb.AsReferenceable(avatar, "perspective")
        return self.users[name]

    # -- paging --------------------------------------------------------------

    def remote_download(self, collector, size):
        util.StringPager(collector, samples.big_blob(size))

    def remote_pull(self, source):
        return util.getAllPages(source, "pages").addCallback(
            lambda pages: samples.sha256(b"".join(pages)))

    # -- deferred results ----------------------------------------------------

    def remote_slowAdd(self, a, b, delay):
        d = defer.Deferred()
        reactor.callLater(delay, d.callback, a + b)
        return d

    # -- references ----------------------------------------------------------

    def remote_getRef(self):
        return Greeter()

    def remote_isSame(self, a, b):
        return a is b

    def remote_refCount(self):
        return len(self.broker.localObjects) - 1

    def remote_callMeBack(self, ref, *args):
        return ref.callRemote("step", *args)

    def remote_callMeBackKw(self, ref, name, *args, **kw):
        return ref.callRemote(name, *args, **kw)

    def remote_store(self, ref):
        self.stored = ref

    def remote_callStored(self, name, *args):
        return self.stored.callRemote(name, *args)

    def remote_dropStored(self):
        # Dropping the last reference makes the RemoteReference send decref.
        self.stored = None
        gc.collect()
        return True


class RootProvider(pb.Root):
    """Gives every new connection (broker) its own ConnectionRoot."""

    def rootObject(self, broker):
        return ConnectionRoot(broker)


def stop_on_stdin_eof():
    """Stop the reactor once the parent closes our stdin."""

    def wait_for_eof():
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered
        # reader aborts the interpreter at shutdown (e.g. after SIGTERM).
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        reactor.callFromThread(stop_if_running)

    def stop_if_running():
        if reactor.running:
            reactor.stop()

    threading.Thread(target=wait_for_eof, name="stdin-eof", daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--unsafe-tracebacks",
        action="store_true",
        help="send full tracebacks with failures (PBServerFactory unsafeTracebacks)",
    )
    options = parser.parse_args(argv)

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    factory = pb.PBServerFactory(
        RootProvider(), unsafeTracebacks=options.unsafe_tracebacks
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def announce():
        # Runs once the reactor has installed its SIGTERM/SIGINT handlers
        # (which stop the reactor), so a parent that signals us as soon as
        # it has read the port gets a clean shutdown.
        sys.stdout.write(f"PORT {port.getHost().port}\n")
        sys.stdout.flush()
        stop_on_stdin_eof()

    reactor.callWhenRunning(announce)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
