"""Real OS threads and flags, whatever gevent's monkey-patching did (layer L3).

``threading.Thread`` taken from before patching still starts greenlets,
because its methods use the (patched) ``threading`` module's globals; these
use ``_thread`` directly, as it was before any patching.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from .waiting import real

if TYPE_CHECKING:  # pragma: no cover
    import _thread

__all__ = ["OSThread", "OSFlag"]

log = logging.getLogger("syncpb")

_allocate_lock: Callable[[], _thread.LockType] = real("_thread", "allocate_lock")
_get_ident: Callable[[], int] = real("_thread", "get_ident")
_start_new_thread: Callable[..., int] = real("_thread", "start_new_thread")


class OSFlag:
    """A one-way flag threads can wait for, unaffected by monkey-patching."""

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        """Raise the flag, waking every waiter."""
        if self._lock.locked():
            try:
                self._lock.release()
            except RuntimeError:
                pass

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return not self._lock.locked()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the flag is raised; return whether it was."""
        if self._lock.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._lock.release()
            return True
        return False


class OSThread:
    """A real OS thread, even in a monkey-patched program.

    ``threading.Thread`` taken from before patching still starts greenlets,
    because its methods use the (patched) ``threading`` module's globals;
    this uses ``_thread`` directly.
    """

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        self.name = name
        self.ident: Optional[int] = None
        self._target = target
        self._done = _allocate_lock()

    def start(self) -> None:
        """Start the thread."""
        self._done.acquire()
        _start_new_thread(self._run, ())

    def _run(self) -> None:
        self.ident = _get_ident()
        try:
            self._target()
        except BaseException:
            log.exception("unexpected error in syncpb thread %s", self.name)
        finally:
            self._done.release()

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._done.locked()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread to end; return True if it did."""
        if not self._done.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            return False
        self._done.release()
        return True
