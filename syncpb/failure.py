"""A captured exception, as handed to errbacks (layer L1: needs only errors).

:class:`Failure` plays the part of Twisted's ``twisted.python.failure.Failure``
for syncpb code: it holds one exception together with the traceback it was
raised with, so that the exception can travel down a :class:`Deferred
<syncpb.deferred.Deferred>` chain and be inspected, trapped or raised again
later, possibly in another thread.

Matching by name
----------------
Failures that arrive from a peer whose class is unknown locally carry a
:class:`~syncpb.errors.RemoteError`, which remembers the fully qualified
names of the remote class and of its parents. :meth:`Failure.check` and
:meth:`Failure.trap` therefore match an entry in two ways:

* a class matches if the exception is an instance of it, *or* if the
  exception is a :class:`~syncpb.errors.RemoteError` whose remote parents
  include the class's wire name (see :func:`~syncpb.errors.wire_name_of`);
* a string such as ``"builtins.ValueError"`` matches if it names the
  exception's class or one of its bases, locally (by wire name or by plain
  ``module.QualName``) or, for a remote error, among its remote parents.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType
from typing import IO, List, Optional, Set, Tuple, Type, Union

from syncpb.errors import RemoteError, SyncPBError, wire_name_of

__all__ = ["Failure", "NoCurrentExceptionError", "ErrorType"]

#: What :meth:`Failure.check` and :meth:`Failure.trap` accept as entries.
ErrorType = Union[Type[BaseException], str]


class NoCurrentExceptionError(SyncPBError, TypeError):
    """``Failure()`` was asked to capture an exception, but none is handled."""


class Failure:
    """One exception and its traceback, passed along a Deferred's error path.

    Attributes:
        value: the exception instance.
        type: the exception's class.
        tb: the traceback the exception was raised with, or ``None`` when
            the exception was never raised.
    """

    def __init__(
        self,
        exc_value: Optional[BaseException] = None,
        exc_type: Optional[Type[BaseException]] = None,
        exc_tb: Optional[TracebackType] = None,
    ) -> None:
        """Wrap ``exc_value``, or capture the exception being handled.

        Args:
            exc_value: the exception to wrap. When ``None`` (and no other
                argument is given) the exception currently being handled,
                as reported by :func:`sys.exc_info`, is captured.
            exc_type: the exception's class; defaults to
                ``type(exc_value)``.
            exc_tb: the traceback; defaults to ``exc_value.__traceback__``.

        Raises:
            NoCurrentExceptionError: no argument was given and no exception
                is being handled.
            TypeError: ``exc_value`` is not an exception instance, or it is
                not an instance of ``exc_type``.
        """
        if exc_value is None:
            if exc_type is not None or exc_tb is not None:
                raise TypeError("Failure() needs exc_value when exc_type or exc_tb is given")
            exc_type, exc_value, exc_tb = _current_exception()
        if not isinstance(exc_value, BaseException):
            raise TypeError(f"Failure() needs an exception instance, not {exc_value!r}")
        if exc_type is None:
            exc_type = type(exc_value)
        elif not isinstance(exc_value, exc_type):
            raise TypeError(f"{exc_value!r} is not an instance of {exc_type!r}")
        self.value: BaseException = exc_value
        self.type: Type[BaseException] = exc_type
        self.tb: Optional[TracebackType] = (
            exc_tb if exc_tb is not None else exc_value.__traceback__
        )

    def check(self, *error_types: ErrorType) -> Optional[ErrorType]:
        """Return the first of ``error_types`` that this failure matches.

        Args:
            *error_types: exception classes or fully qualified class names
                (``"builtins.KeyError"``); see the module docstring for how
                remote errors match.

        Returns:
            The first matching entry, or ``None`` if none matches.

        Raises:
            TypeError: an entry is neither a class nor a string.
        """
        for entry in error_types:
            if self._matches(entry):
                return entry
        return None

    def trap(self, *error_types: ErrorType) -> ErrorType:
        """Return the matching entry, or raise the wrapped exception again.

        Inside an errback this lets other errors continue down the error
        path: the next errback receives a failure of the same exception.

        Args:
            *error_types: as for :meth:`check`.

        Returns:
            The first matching entry.

        Raises:
            BaseException: the wrapped exception, with its traceback, when
                no entry matches.
        """
        match = self.check(*error_types)
        if match is None:
            self.raiseException()
        return match  # type: ignore[return-value]

    def getErrorMessage(self) -> str:  # noqa: N802 (Twisted's name)
        """Return the error's message.

        Returns:
            The remote message for a :class:`~syncpb.errors.RemoteError`,
            ``str(value)`` for any other exception.
        """
        if isinstance(self.value, RemoteError):
            return self.value.message
        return str(self.value)

    def getTraceback(self) -> str:  # noqa: N802 (Twisted's name)
        """Return the formatted traceback text.

        Returns:
            The local traceback and exception line; for a
            :class:`~syncpb.errors.RemoteError` that carries the remote
            traceback, that text follows under a ``Remote traceback:``
            heading.
        """
        lines = traceback.format_exception(self.type, self.value, self.tb)
        text = "".join(lines)
        remote = self._remote_traceback()
        if remote:
            text += "Remote traceback:\n" + remote
            if not remote.endswith("\n"):
                text += "\n"
        return text

    def printTraceback(self, file: Optional[IO[str]] = None) -> None:  # noqa: N802
        """Write :meth:`getTraceback` to ``file``.

        Args:
            file: a text stream; defaults to :data:`sys.stderr`.
        """
        (file if file is not None else sys.stderr).write(self.getTraceback())

    def raiseException(self) -> None:  # noqa: N802 (Twisted's name)
        """Raise the wrapped exception with its original traceback.

        Raises:
            BaseException: always, the wrapped exception.
        """
        raise self.value.with_traceback(self.tb)

    def __repr__(self) -> str:
        """Return e.g. ``<Failure builtins.ValueError: bad input>``."""
        if isinstance(self.value, RemoteError):
            kind = f"remote {self.value.remote_type}"
        else:
            kind = wire_name_of(self.type)
        return f"<Failure {kind}: {self.getErrorMessage()}>"

    def _matches(self, entry: ErrorType) -> bool:
        """Tell whether one :meth:`check` entry matches this failure.

        Args:
            entry: an exception class or a fully qualified class name.

        Returns:
            ``True`` on a match.

        Raises:
            TypeError: ``entry`` is neither a class nor a string.
        """
        if isinstance(entry, str):
            return entry in self._names()
        if not isinstance(entry, type):
            raise TypeError(f"check()/trap() take classes or names, not {entry!r}")
        if isinstance(self.value, entry):
            return True
        return bool(_class_names(entry) & set(self._remote_parents()))

    def _names(self) -> Set[str]:
        """Return every name the exception's class and bases are known by.

        Returns:
            Wire names and plain qualified names of the local class's MRO,
            plus the remote parents of a remote error.
        """
        names: Set[str] = set(self._remote_parents())
        for cls in self.type.__mro__:
            names |= _class_names(cls)
        return names

    def _remote_traceback(self) -> Optional[str]:
        """Return the remote traceback text of a remote error, if any.

        Returns:
            ``value.remote_traceback`` of a remote error, otherwise ``None``.
        """
        if isinstance(self.value, RemoteError):
            return self.value.remote_traceback
        return None

    def _remote_parents(self) -> List[str]:
        """Return the remote parents' names, empty for a local exception.

        Returns:
            ``value.remote_parents`` of a remote error, otherwise ``[]``.
        """
        if isinstance(self.value, RemoteError):
            return list(self.value.remote_parents)
        return []


def _class_names(cls: type) -> Set[str]:
    """Return the names a class may be referred to by in a failure.

    Args:
        cls: any class.

    Returns:
        Its wire name and its plain ``module.QualName`` (often the same).
    """
    return {wire_name_of(cls), f"{cls.__module__}.{cls.__qualname__}"}


def _current_exception() -> Tuple[
    Type[BaseException], BaseException, Optional[TracebackType]
]:
    """Return the exception currently being handled.

    Returns:
        The ``(type, value, traceback)`` triple.

    Raises:
        NoCurrentExceptionError: no exception is being handled.
    """
    exc_type, exc_value, exc_tb = sys.exc_info()
    if exc_type is None or exc_value is None:
        raise NoCurrentExceptionError(
            "Failure() without arguments must be created while an exception is handled"
        )
    return exc_type, exc_value, exc_tb
