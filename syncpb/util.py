"""Paging: moving data larger than one message, as ``twisted.spread.util`` does (L5).

Theory of operation
-------------------
The receiver passes a *collector* (a :class:`CallbackPageCollector`, which
is a Referenceable) as the first argument of some remote method; the
sender wraps the collector's proxy in a :class:`Pager`. The pager sends
each page as ``collector.gotPage(page)`` and finally
``collector.endedPaging()``, all without asking for answers
(``answerRequired`` 0), so the wire is exactly Twisted's and either side
may be Twisted.

A pager runs in its own task (a greenlet on a gevent server's
connection, an OS thread on a client connection) and writes each page before making the next: a slow
reader makes the socket's buffer fill and the write wait, so at most a
socket buffer of pages is in flight, never the whole data. Pages may
interleave with other traffic, including the answer to the call that
started the paging.

:func:`getAllPages` is Twisted's: it returns a Deferred of the list of
pages. :func:`get_all_pages` is the blocking form that returns the whole
result, joined when the pages are bytes or text.
"""

from __future__ import annotations

import logging
from typing import IO, Any, Callable, List, Optional, Union

from .deferred import Deferred
from .errors import ConnectionLost, DeadReferenceError
from .failure import Failure
from .flavors import Referenceable

__all__ = ["Pager", "StringPager", "FilePager", "CallbackPageCollector", "getAllPages",
           "get_all_pages"]

log = logging.getLogger("syncpb.util")

#: Twisted's page size for StringPager.
STRING_CHUNK = 8192
#: Twisted's FileSender chunk size, used by FilePager.
FILE_CHUNK = 2 ** 14


class Pager:
    """Sends pages to a peer's collector (Twisted's ``util.Pager``).

    Args:
        collector: the proxy of the peer's page collector.
        callback: called with ``*args, **kwargs`` once paging has ended.

    Subclasses implement :meth:`nextPage` and call :meth:`stopPaging` when
    the page they return is the last one. Paging starts at once, in the
    background.
    """

    def __init__(self, collector: Any, callback: Optional[Callable[..., Any]] = None,
                 *args: Any, **kwargs: Any) -> None:
        self.collector = collector
        self.callback = callback
        self.callbackArgs = args  # noqa: N815 - Twisted's attribute names
        self.callbackKeyword = kwargs  # noqa: N815
        self._stillPaging = True
        session = getattr(collector, "_pb_session", None)
        if session is None:
            raise TypeError("a Pager needs the proxy (RemoteReference) of a page collector")
        self._session = session
        session.spawn(self._page_all, "syncpb-pager")

    def stillPaging(self) -> bool:  # noqa: N802 - Twisted's name
        """True while pages remain; once paging has stopped, tell the
        collector (``endedPaging``) and run the callback."""
        if not self._stillPaging:
            self.collector.callRemoteNoAnswer("endedPaging")
            self._session.flush()
            if self.callback is not None:
                self.callback(*self.callbackArgs, **self.callbackKeyword)
        return self._stillPaging

    def sendNextPage(self) -> None:  # noqa: N802
        """Send the next page (and write it out before returning)."""
        self.collector.callRemoteNoAnswer("gotPage", self.nextPage())
        self._session.flush()

    def nextPage(self) -> Any:  # noqa: N802
        """Return the next page; call :meth:`stopPaging` with the last one."""
        raise NotImplementedError

    def stopPaging(self) -> None:  # noqa: N802
        """The page being returned is the last."""
        self._stillPaging = False

    def _page_all(self) -> None:
        try:
            while self.stillPaging():
                self.sendNextPage()
        except (ConnectionLost, DeadReferenceError) as exc:
            log.warning("paging stopped: %s", exc)
        except Exception:
            log.exception("paging to %r failed", self.collector)


class StringPager(Pager):
    """Pages a bytes or str value in ``chunkSize`` pieces (Twisted's default 8192)."""

    def __init__(self, collector: Any, st: Union[bytes, str], chunkSize: int = STRING_CHUNK,  # noqa: N803
                 callback: Optional[Callable[..., Any]] = None, *args: Any,
                 **kwargs: Any) -> None:
        if chunkSize < 1:
            raise ValueError("chunkSize must be at least 1")
        self.string = st
        self.pointer = 0
        self.chunkSize = chunkSize  # noqa: N815
        super().__init__(collector, callback, *args, **kwargs)

    def nextPage(self) -> Union[bytes, str]:  # noqa: N802
        page = self.string[self.pointer:self.pointer + self.chunkSize]
        self.pointer += self.chunkSize
        if self.pointer >= len(self.string):
            self.stopPaging()
        return page


class FilePager(Pager):
    """Pages an open binary file from its current position to its end."""

    def __init__(self, collector: Any, fd: IO[bytes],
                 callback: Optional[Callable[..., Any]] = None, *args: Any,
                 **kwargs: Any) -> None:
        self.fd = fd
        self._next = fd.read(FILE_CHUNK)
        super().__init__(collector, callback, *args, **kwargs)

    def nextPage(self) -> bytes:  # noqa: N802
        page, self._next = self._next, self.fd.read(FILE_CHUNK)
        if not self._next:
            self.stopPaging()
        return page


class CallbackPageCollector(Referenceable):
    """Collects pages; calls ``callback(pages)`` when paging ends."""

    def __init__(self, callback: Callable[[List[Any]], Any]) -> None:
        self.pages: List[Any] = []
        self.callback = callback

    def remote_gotPage(self, page: Any) -> None:  # noqa: N802 - the PB method name
        self.pages.append(page)

    def remote_endedPaging(self) -> None:  # noqa: N802
        self.callback(self.pages)


def getAllPages(referenceable: Any, methodName: str, *args: Any,  # noqa: N802,N803
                **kwargs: Any) -> Deferred:
    """Call ``methodName(collector, *args, **kwargs)`` on the peer's object;
    return a Deferred of the list of pages it sends (Twisted's function).

    Unlike Twisted's, the Deferred also fails if the call itself fails or
    the connection ends before paging does.
    """
    session = referenceable._pb_session
    d = Deferred()
    d._waiter = session.waiter

    def done(pages: List[Any]) -> None:
        if not d.called:
            d.callback(pages)

    def failed(failure: Failure) -> None:
        if not d.called:
            d.errback(failure)

    def lost() -> None:
        failed(Failure(ConnectionLost(f"connection lost while paging {methodName!r}")))

    session.notify_on_disconnect(lost)
    d.addBoth(_forget_disconnect, session, lost)
    call = referenceable.callRemote(methodName, CallbackPageCollector(done), *args, **kwargs)
    call.addErrback(failed)
    return d


def _forget_disconnect(result: Any, session: Any, lost: Callable[[], Any]) -> Any:
    session.dont_notify_on_disconnect(lost)
    return result


def get_all_pages(referenceable: Any, methodName: str, *args: Any,  # noqa: N803
                  timeout: Optional[float] = None, **kwargs: Any) -> Any:
    """Blocking :func:`getAllPages`: the whole result, joined when the pages
    are bytes or text (else the list of pages).

    Raises:
        the remote exception, ConnectionLost, or CallTimeout after ``timeout``.
    """
    pages = getAllPages(referenceable, methodName, *args, **kwargs).result(timeout=timeout)
    if pages and all(type(p) is bytes for p in pages):
        return b"".join(pages)
    if pages and all(type(p) is str for p in pages):
        return "".join(pages)
    return pages

