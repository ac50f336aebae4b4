"""Blocking exactly the caller: syncpb's one waiting primitive (layer L3).

Theory of operation
-------------------
syncpb never decides how to wait when a connection (or a pool) is made; it
decides at each wait, from the caller's own context:

* **inside a running gevent hub** -- the calling OS thread has a hub and the
  caller is a greenlet other than the hub itself -- a wait blocks only the
  calling greenlet: it switches to the hub, which runs the thread's other
  greenlets until the wait ends. Monkey-patching plays no part.
* **anywhere else** a wait blocks the calling OS thread on a real lock (taken
  from before any monkey-patching).

:func:`wait_mode` says which of the two a wait made here would use.

A :class:`Wakeup` is made by the waiter, in its own context, and may be set
from any thread or greenlet. Waking a greenlet from another OS thread goes
through an async watcher of its hub, the hub operation gevent allows from a
foreign thread. :func:`call_soon_in` hands any callable to a
context captured earlier with :func:`cooperative_hub` (the callbacks of a
call made in a greenlet run in that greenlet's hub, as they would in
Twisted's reactor thread).

gevent is never imported here: the greenlet path is taken only when the
program has already made a hub in the thread.
"""

from __future__ import annotations

import select
import sys
from typing import Any, Callable, List, Optional

__all__ = ["real", "cooperative_hub", "wait_mode", "Wakeup", "call_soon_in", "poll_readable"]


def real(module: str, name: str) -> Any:
    """Return ``module.name`` as it was before any gevent monkey-patching."""
    get_original = getattr(sys.modules.get("gevent.monkey"), "get_original", None)
    if get_original is not None:  # (not while another thread is still importing it)
        return get_original(module, name)
    return getattr(__import__(module), name)


_allocate_lock = real("_thread", "allocate_lock")
_get_ident = real("_thread", "get_ident")
_TIMEOUT_MAX: float = real("_thread", "TIMEOUT_MAX")


def cooperative_hub() -> Any:
    """The gevent hub a wait made here must yield to, or None.

    Returns:
        This thread's hub when gevent is loaded, the thread has a hub and
        the caller is not the hub greenlet itself (which cannot block);
        otherwise ``None``: the wait blocks the OS thread.
    """
    hub_local = sys.modules.get("gevent._hub_local")
    if hub_local is None:
        return None
    hub = hub_local.get_hub_if_exists()
    if hub is None or sys.modules["greenlet"].getcurrent() is hub:
        return None
    return hub


def wait_mode() -> str:
    """What a blocking syncpb call made here blocks: ``"greenlet"`` inside a
    running gevent hub, ``"thread"`` anywhere else.

    The answer depends only on the caller, never on how or where the
    connection or pool was made.
    """
    return "greenlet" if cooperative_hub() is not None else "thread"


class Wakeup:
    """A one-shot event that blocks exactly the caller that made it.

    Make it in the context that will wait; :meth:`set` it from anywhere.
    A greenlet's wake-up from another thread comes through an async watcher
    of its hub, which also keeps the hub's loop alive while it waits (with
    nothing else to watch, gevent would otherwise end the wait with
    ``LoopExit``).
    """

    __slots__ = ("_hub", "_owner", "_event", "_lock", "_async", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        hub = cooperative_hub()
        self._hub = hub
        self._owner = _get_ident()
        self._lock = _allocate_lock()
        self._async: Any = None
        if hub is None:
            self._event: Any = None
            self._lock.acquire()
        else:
            self._event = _gevent_event()

    @property
    def green(self) -> bool:
        """True when the waiter is a greenlet (it blocks only itself)."""
        return self._hub is not None

    def set(self) -> None:
        """Wake the waiter (from any thread or greenlet; once is enough)."""
        if self.is_set:
            return
        self.is_set = True
        if self._hub is None:
            try:
                self._lock.release()
            except RuntimeError:  # a racing set() released it first
                pass
        elif _get_ident() == self._owner:
            self._event.set()
        else:
            with self._lock:  # the waiter closes the watcher under this lock
                if self._async is not None:
                    self._async.send()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block the caller until :meth:`set`; return False on timeout."""
        if self._hub is not None:
            return self._wait_green(timeout)
        lock = self._lock
        if timeout is None:
            got = lock.acquire()
        else:
            got = lock.acquire(True, min(max(timeout, 0.0), _TIMEOUT_MAX))
        if got:
            lock.release()  # stays set: a second wait returns at once
        return bool(got)

    def _wait_green(self, timeout: Optional[float]) -> bool:
        watcher = self._hub.loop.async_()
        watcher.start(self._event.set)
        with self._lock:
            self._async = watcher
        try:
            if self.is_set:  # set from another thread before the watcher existed
                self._event.set()
            return bool(self._event.wait(timeout))
        finally:
            with self._lock:
                self._async = None
            watcher.stop()
            watcher.close()


def _gevent_event() -> Any:
    import gevent.event  # a hub exists, so gevent is loaded: this only binds the name
    return gevent.event.Event()


def call_soon_in(hub: Any, function: Callable[..., Any], *args: Any) -> None:
    """Run ``function(*args)`` in ``hub``'s thread (at once when already
    there, or when ``hub`` is None)."""
    if hub is None or _get_ident() == hub.thread_ident:
        function(*args)
    else:
        hub.loop.run_callback_threadsafe(function, *args)


try:  # the real poll(), even if gevent patched the module (not on Windows)
    _poll: Any = real("select", "poll")
except AttributeError:
    _poll = None
_select = real("select", "select")
#: poll() reports these for a descriptor that can be read (or has failed or
#: hung up, which the read then reports as an error or an end of stream).
_POLL_READ = (getattr(select, "POLLIN", 1) | getattr(select, "POLLERR", 8)
              | getattr(select, "POLLHUP", 16))


def poll_readable(fds: List[int], timeout: Optional[float]) -> List[int]:
    """Block the calling OS thread until one of ``fds`` can be read, or for
    ``timeout`` seconds (None: no limit); return the readable ones.

    It uses the real ``poll()`` where the platform has it (Linux, macOS,
    the BSDs), since ``select()`` refuses descriptors at or above
    ``FD_SETSIZE`` (1024), which a busy process hands out; ``select()``
    remains for platforms without ``poll()``. A closed descriptor raises
    :class:`OSError` or :class:`ValueError`, as ``select()`` does.
    """
    if _poll is None:
        return list(_select(fds, [], [], timeout)[0])
    poller = _poll()
    for fd in fds:
        if fd < 0:
            raise ValueError("file descriptor is closed")
        poller.register(fd, _POLL_READ)
    ms = None if timeout is None else max(0.0, timeout * 1000.0)
    return [fd for fd, _ in poller.poll(ms)]
