"""Classes and sample values shared by the Twisted interop peers.

The Twisted peer scripts in this directory put the directory on ``sys.path``
and ``import interop_types``, so every class here travels on the wire under
the module name ``interop_types`` (for example ``b'interop_types.MyError'``
and the Copyable tag ``b'interop_types.CopyableError'``). A syncpb peer that
wants to exchange these classes must use the same names.

``sample_values()`` (from the Twisted-free ``samples`` module, re-exported
here) is the single source of truth for the values the server's ``types()``
method returns and both clients check against.
"""

from twisted.spread import pb


class MyError(pb.Error):
    """A plain ``pb.Error`` subclass: travels as a CopyableFailure whose
    ``type`` is ``b'interop_types.MyError'``."""


class CopyableError(pb.Error, pb.Copyable):
    """An exception that is also a Copyable, so PB sends the exception object
    itself (tag ``b'interop_types.CopyableError'``, state ``message``/``code``)
    instead of a CopyableFailure."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message
        self.code = code

    def getStateToCopy(self):
        return {"message": self.message, "code": self.code}

    def __str__(self):
        return f"{self.message} (code {self.code})"


class RemoteCopyableError(CopyableError, pb.RemoteCopy):
    """The receiving side's copy of a CopyableError (built without calling
    ``__init__``; its attributes come from the copied state)."""


pb.setUnjellyableForClass(CopyableError, RemoteCopyableError)


class Point(pb.Copyable):
    """A plain Copyable (tag ``b'interop_types.Point'``, state ``x``/``y``)."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


class RemotePoint(pb.RemoteCopy):
    """The receiving side's copy of a Point."""


pb.setUnjellyableForClass(Point, RemotePoint)


class Counter(pb.Cacheable):
    """A Cacheable (tag ``b'interop_types.Counter'``, state ``value``) that
    sends ``setValue`` to every holder on each increment."""

    def __init__(self):
        self.value = 0
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        # Twisted hands a new observer object here; match it by its broker.
        self.observers = [o for o in self.observers if o.broker is not observer.broker]

    def increment(self):
        """Fires with the new value once every holder has applied it."""
        from twisted.internet import defer

        self.value += 1
        updates = [o.callRemote("setValue", self.value) for o in self.observers]
        return defer.gatherResults(updates).addCallback(lambda _: self.value)


class RemoteCounter(pb.RemoteCache):
    """A holder's copy of a Counter; ``updates`` lists the values received."""

    def setCopyableState(self, state):
        self.__dict__.update(state)
        self.updates = []

    def observe_setValue(self, value):
        self.value = value
        self.updates.append(value)
        return "ok"


pb.setUnjellyableForClass(Counter, RemoteCounter)


class Board(pb.Viewable):
    """A Viewable: each perspective (avatar) sees its own posts."""

    def __init__(self):
        self.posts = []

    def view_whoami(self, perspective):
        return None if perspective is None else perspective.name

    def view_post(self, perspective, text):
        self.posts.append((perspective.name, text))
        return len(self.posts)

    def view_mine(self, perspective):
        return [text for who, text in self.posts if who == perspective.name]


class User(pb.Avatar):
    """An avatar; in these tests it is handed out without a login."""

    def __init__(self, name, board):
        self.name = name
        self.board = board

    def perspective_board(self):
        return self.board

    def perspective_name(self):
        return self.name


# The expected values live in a Twisted-free module shared with the syncpb side.
from samples import make_cycle, make_shared, sample_values  # noqa: E402,F401 (re-export)

__all__ = ["MyError", "CopyableError", "RemoteCopyableError", "Point", "RemotePoint",
           "Counter", "RemoteCounter", "Board", "User",
           "make_cycle",
           "make_shared", "sample_values"]
