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


# The expected values live in a Twisted-free module shared with the syncpb side.
from samples import make_cycle, make_shared, sample_values  # noqa: E402,F401 (re-export)

__all__ = ["MyError", "CopyableError", "RemoteCopyableError", "Point", "RemotePoint",
           "make_cycle",
           "make_shared", "sample_values"]
