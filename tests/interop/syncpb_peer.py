"""The syncpb side of the Twisted interop tests (imports no Twisted).

``tests/peers/interop_types.py`` imports ``twisted.spread.pb`` at import
time, so the test process (which must never import Twisted) cannot use it.
This module is its syncpb twin:

* ``MyError`` and ``CopyableError``: ``syncpb.Error`` subclasses travelling
  under the same wire names as the Twisted classes
  (``interop_types.MyError``, ``interop_types.CopyableError``). They are
  defined exactly once per process, here: syncpb maps a wire name to the
  *last* class defined under it, so a second definition in another test
  module would silently take over the name. ``CopyableError`` is also a
  ``syncpb.Copyable`` (so it travels as itself) and ``RemoteCopyableError``
  is registered for its tag, as in ``interop_types``.
* ``Point`` / ``RemotePoint``: the Copyable pair of ``interop_types``
  (tag ``interop_types.Point``), registered in the process-wide registry.
* ``sample_values()``, ``make_cycle()``, ``make_shared()``: a copy of the
  expectations in ``interop_types``. The copy cannot drift unnoticed: the
  syncpb server below returns these values from ``types()`` and the
  unchanged Twisted client compares them with the originals
  (``types.*`` and ``types.no_extra_keys`` in test_twisted_client.py).
* ``mismatch()`` / ``structure_problem()``: exact comparison (values *and*
  types all the way down, cycles handled), as the Twisted client does it.
* ``RootProvider``: a syncpb server root with exactly the methods of
  ``tests/peers/twisted_server.py`` and the same behaviour.
"""

import gc
import sys
from pathlib import Path

import gevent

import syncpb
from syncpb import util

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
from samples import (BIG_SIZE, big_blob, make_cycle, make_shared, mismatch,  # noqa: E402,F401
                     sample_values, sha256, short, structure_problem)


# -- the classes shared with the Twisted peers ---------------------------------


class MyError(syncpb.Error):
    """Twin of ``interop_types.MyError`` (a plain ``pb.Error`` subclass)."""

    __module__ = "interop_types"


class CopyableError(syncpb.Error, syncpb.Copyable):
    """Twin of ``interop_types.CopyableError``: an exception that is also a
    Copyable, so it travels as itself (copy tag ``interop_types.CopyableError``,
    state ``message``/``code``) instead of as a CopyableFailure."""

    __module__ = "interop_types"

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message
        self.code = code

    def getStateToCopy(self):
        return {"message": self.message, "code": self.code}

    def __str__(self):
        return f"{self.message} (code {self.code})"


class RemoteCopyableError(CopyableError, syncpb.RemoteCopy):
    """The receiving side's copy of a CopyableError."""

    __module__ = "interop_types"


class Point(syncpb.Copyable):
    """Twin of ``interop_types.Point``."""

    __module__ = "interop_types"

    def __init__(self, x, y):
        self.x = x
        self.y = y


class RemotePoint(syncpb.RemoteCopy):
    """Twin of ``interop_types.RemotePoint``."""

    __module__ = "interop_types"


class Counter(syncpb.Cacheable):
    """Twin of ``interop_types.Counter``."""

    __module__ = "interop_types"

    def __init__(self):
        self.value = 0
        self.observers = syncpb.ObserverList()

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.add(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.discard(observer)

    def increment(self):
        """A Deferred of the new value, once every holder has applied it."""
        self.value += 1
        return syncpb.gather(self.observers.notify("setValue", self.value)).addCallback(
            lambda _: self.value)


class RemoteCounter(syncpb.RemoteCache):
    """Twin of ``interop_types.RemoteCounter``."""

    __module__ = "interop_types"

    def setCopyableState(self, state):
        self.__dict__.update(state)
        self.updates = []

    def observe_setValue(self, value):  # noqa: N802 - the PB method name
        self.value = value
        self.updates.append(value)
        return "ok"


class Board(syncpb.Viewable):
    """Twin of ``interop_types.Board``."""

    def __init__(self):
        self.posts = []

    def view_whoami(self, perspective):
        return None if perspective is None else perspective.name

    def view_post(self, perspective, text):
        self.posts.append((perspective.name, text))
        return len(self.posts)

    def view_mine(self, perspective):
        return [text for who, text in self.posts if who == perspective.name]


class User(syncpb.Avatar):
    """Twin of ``interop_types.User`` (handed out without a login)."""

    def __init__(self, name, board):
        self.name = name
        self.board = board

    def perspective_board(self):
        return self.board

    def perspective_name(self):
        return self.name


syncpb.setUnjellyableForClass(CopyableError, RemoteCopyableError)
syncpb.setUnjellyableForClass(Point, RemotePoint)
syncpb.setUnjellyableForClass(Counter, RemoteCounter)


# -- the expected values (a copy of interop_types.sample_values) ---------------


SAMPLE_NAMES = list(sample_values())


# -- exact comparison ----------------------------------------------------------


# -- a syncpb server root equal to tests/peers/twisted_server.py --------------


class Greeter(syncpb.Referenceable):
    """A small object handed out by reference."""

    def remote_hello(self, name):
        return "hello " + name


class ConnectionRoot(syncpb.Referenceable):
    """The root object published on one connection.

    Server methods run in their own greenlet in the server's gevent hub, so
    ``gevent.sleep`` and returned Deferreds never stall other calls.
    """

    def __init__(self, broker):
        self.broker = broker
        self.counter = Counter()
        self.board = Board()
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
        return sample_values()

    def remote_cycle(self):
        return make_cycle()

    def remote_shared(self):
        return make_shared()

    # -- errors ------------------------------------------------------------

    def remote_failValue(self):
        raise ValueError("bad value")

    def remote_failPbError(self):
        raise MyError("custom pb error")

    def remote_failDeferred(self):
        # Fails on the next turn of the hub, like Twisted's callLater(0, ...).
        d = syncpb.Deferred()
        gevent.get_hub().loop.run_callback(d.errback, KeyError("missing"))
        return d

    def remote_failCopyable(self):
        raise CopyableError("copyable pb error", 17)

    # -- copies --------------------------------------------------------------

    def remote_getPoint(self, x, y):
        return Point(x, y)

    def remote_sumPoint(self, p):
        if not isinstance(p, RemotePoint):
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
            self.users[name] = User(name, self.board)
        return self.users[name]

    # -- paging --------------------------------------------------------------

    def remote_download(self, collector, size):
        util.StringPager(collector, big_blob(size))

    def remote_pull(self, source):
        return util.getAllPages(source, "pages").addCallback(
            lambda pages: sha256(b"".join(pages)))

    # -- deferred results ----------------------------------------------------

    def remote_slowAdd(self, a, b, delay):
        gevent.sleep(delay)  # cooperative: only this call's greenlet waits
        return a + b

    # -- references ----------------------------------------------------------

    def remote_getRef(self):
        return Greeter()

    def remote_isSame(self, a, b):
        return a is b

    def remote_refCount(self):
        return self.broker.export_count  # the root is not counted

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


class RootProvider(syncpb.Root):
    """Gives every new connection (broker) its own ConnectionRoot."""

    def __init__(self):
        self.roots = []

    def rootObject(self, broker):  # noqa: N802 - Twisted's name
        root = ConnectionRoot(broker)
        self.roots.append(root)
        return root
