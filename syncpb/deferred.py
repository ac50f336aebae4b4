"""Twisted-style Deferreds that threads and greenlets can also wait for.

A :class:`Deferred` is a promise of one result plus a chain of
``(callback, errback)`` pairs, with the rules of Twisted's
``twisted.internet.defer.Deferred``:

* :meth:`Deferred.callback` or :meth:`Deferred.errback` fires it exactly once
  (a second time raises :class:`~syncpb.errors.AlreadyCalledError`);
* each pair receives the current result; a callback that raises moves the
  chain to the error path with a :class:`~syncpb.failure.Failure`, an errback
  that returns a non-Failure moves it back, returning a Failure stays on the
  error path;
* a callback or errback that returns another Deferred pauses the chain until
  that Deferred has a result, which then becomes the current result (the
  returned Deferred is left holding ``None``). This is done iteratively, so
  long chains and deep nesting do not exhaust the stack.

On top of that, :meth:`Deferred.result` blocks until the result is final and
returns it (or raises the error), optionally with a timeout.

Which thread/greenlet runs callbacks
------------------------------------
Nothing is scheduled; callbacks run synchronously:

* firing a Deferred runs its chain in the thread (greenlet) that fires it;
* adding a callback to a Deferred that has already fired and whose chain is
  idle runs the chain in the thread that adds the callback, before
  ``addCallback`` returns;
* adding a callback while another thread is running the chain only queues
  it: the running thread picks it up before it stops;
* when a Deferred that another chain is paused on gets its result, the thread
  that delivered it also runs the paused chain onwards.

Each Deferred guards its state with a real (never monkey-patched) lock, held
only for short bookkeeping and never while user code runs, so callbacks may
freely add callbacks to the Deferred they belong to.

Waiting
-------
:meth:`Deferred.result` repeatedly looks for the *target*: the innermost
Deferred the result still depends on that has not fired yet (the Deferred
itself, the Deferred its chain is paused on, recursively, or the source a
:meth:`Deferred.chainDeferred` feeds from). It then calls
``target._waiter.wait(target, timeout)``, or :data:`DEFAULT_WAITER`'s when the
target's ``_waiter`` is ``None``. Connections put their own :class:`Waiter`
there to drive their socket while a caller waits. :data:`DEFAULT_WAITER`
just blocks until the target has fired and its chain has stopped running,
through :class:`syncpb.waiting.Wakeup`:

* in a thread that runs a gevent hub (and is not the hub greenlet itself)
  it blocks only the calling greenlet, and is woken safely even when the
  Deferred fires in another OS thread;
* anywhere else it blocks the calling OS thread on a real lock.

gevent is never imported by this module; the gevent path is taken only when
the application already imported gevent and created a hub in the thread.

Cancelling and timeouts
-----------------------
:meth:`Deferred.cancel` and :meth:`Deferred.addTimeout` follow Twisted: a
canceller given to the constructor is asked to stop the producer; a
Deferred that did not fire through it fails with
:class:`~syncpb.errors.CancelledError` (a timeout turns that into
:class:`~syncpb.errors.CallTimeout`). With no canceller, the producer's
one late ``callback()``/``errback()`` is ignored. A cancel may come from any
thread or greenlet; whoever waits in :meth:`Deferred.result` wakes up. The
timer of ``addTimeout`` comes from :mod:`syncpb.timers` (no thread per
timeout).

Unhandled errors
----------------
A Deferred that is garbage collected while its final result is a Failure that
no errback handled and :meth:`Deferred.result` never raised logs it once, with
its traceback, to the ``"syncpb"`` logger at ERROR level ("Unhandled error in
Deferred").
"""

from __future__ import annotations

import _thread
import logging
import sys
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Set,
    Tuple,
    Union,
)

from syncpb.errors import AlreadyCalledError, CallTimeout, CancelledError, format_seconds
from syncpb.failure import Failure
from syncpb.timers import Clock, default_clock
from syncpb.waiting import Wakeup

__all__ = [
    "Deferred",
    "Waiter",
    "DefaultWaiter",
    "DEFAULT_WAITER",
    "gather",
    "succeed",
    "fail",
    "maybe_deferred",
    "maybeDeferred",
]

_log = logging.getLogger("syncpb")

Hook = Callable[[], None]
Canceller = Callable[["Deferred"], None]
_Step = Tuple[Optional[Callable[..., Any]], Tuple[Any, ...], Dict[str, Any]]
_Pair = Tuple[_Step, _Step]


def _original_thread_function(name: str) -> Any:
    """Return ``_thread.<name>`` as it was before any gevent monkey-patching.

    Args:
        name: an attribute of the :mod:`_thread` module.

    Returns:
        The unpatched object.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original("_thread", name)
    return getattr(_thread, name)


_allocate_lock: Callable[[], Any] = _original_thread_function("allocate_lock")
_get_ident: Callable[[], int] = _original_thread_function("get_ident")


class _Continue:
    """Chain entry that hands the current result to a paused Deferred."""

    __slots__ = ("outer",)

    def __init__(self, outer: "Deferred") -> None:
        """Remember the Deferred whose chain waits for this result.

        Args:
            outer: the paused Deferred.
        """
        self.outer = outer


_Entry = Union[_Pair, _Continue]


class Waiter(Protocol):
    """Something that can block until a Deferred has fired."""

    def wait(self, deferred: "Deferred", timeout: Optional[float]) -> None:
        """Return once ``deferred`` has fired, or earlier.

        Returning early (on timeout, or for no reason) is allowed: callers
        re-check and call again.

        Args:
            deferred: the Deferred to wait for.
            timeout: seconds to wait at most, ``None`` for no limit.
        """


class Deferred:
    """A result that arrives later, with a Twisted-style callback chain.

    Attributes:
        called: ``True`` once :meth:`callback` or :meth:`errback` was called.
        _waiter: the :class:`Waiter` used when :meth:`result` waits for this
            Deferred to fire; ``None`` means :data:`DEFAULT_WAITER`.
    """

    __slots__ = ("called", "_waiter", "_lock", "_result", "_callbacks", "_running", "_runner",
                 "_paused", "_chained_to", "_fed_by", "_settled_hooks", "_consumed",
                 "_canceller", "_suppress", "__weakref__")

    def __init__(self, canceller: Optional[Canceller] = None) -> None:
        """Create a Deferred that has not fired yet.

        Args:
            canceller: called as ``canceller(self)`` by :meth:`cancel` while
                the Deferred has not fired; it should stop whatever would
                fire it, and may fire it itself.
        """
        self.called = False
        self._canceller = canceller
        self._suppress = False
        self._waiter: Optional[Waiter] = None
        self._lock = _allocate_lock()
        self._result: Any = None
        self._callbacks: List[_Entry] = []  # few: a list costs less than a deque
        self._running = False
        self._runner: Optional[Tuple[int, Any]] = None
        self._paused = False
        self._chained_to: Optional[Deferred] = None
        self._fed_by: Optional[Deferred] = None
        self._settled_hooks: List[Hook] = []
        self._consumed = False

    # -- firing -----------------------------------------------------------

    def callback(self, result: Any) -> None:
        """Fire the Deferred with a successful result and run the chain.

        Args:
            result: the result; must not be a Deferred.

        Raises:
            TypeError: ``result`` is a Deferred.
            AlreadyCalledError: the Deferred has already fired.
        """
        if isinstance(result, Deferred):
            raise TypeError("callback() needs a result, not a Deferred")
        self._fire(result)

    def errback(self, fail: Union[Failure, BaseException, None] = None) -> None:
        """Fire the Deferred with an error and run the chain.

        Args:
            fail: a :class:`~syncpb.failure.Failure`, an exception instance,
                or ``None`` for the exception currently being handled.

        Raises:
            TypeError: ``fail`` is none of those, or it is ``None`` while no
                exception is being handled.
            AlreadyCalledError: the Deferred has already fired.
        """
        self._fire(_as_failure(fail))

    def _fire(self, result: Any) -> None:
        """Store the first result and run the chain in this thread.

        Args:
            result: a value or a Failure.

        Raises:
            AlreadyCalledError: the Deferred has already fired (unless
                :meth:`cancel` arranged to ignore this one late firing).
        """
        with self._lock:
            already = self.called
            if already and self._suppress:
                self._suppress = False
                return
            if not already:
                self.called = True
                self._canceller = None  # no longer needed (and it may hold a cycle)
                self._result = result
                if not self._callbacks and not self._settled_hooks:
                    return  # nothing to run: the usual case for a call nobody chained yet
                self._claim_locked()
        if already:
            raise AlreadyCalledError(f"{self!r} has already fired")
        _run_chains(self)

    # -- cancelling -------------------------------------------------------

    def cancel(self) -> None:
        """Give up on the result, as Twisted's ``Deferred.cancel`` does.

        * Not fired yet: the canceller given to the constructor is called
          (``canceller(self)``); if the Deferred has still not fired, it
          fails with :class:`~syncpb.errors.CancelledError`. Without a
          canceller, the one ``callback()``/``errback()`` its producer will
          still make is ignored instead of raising
          :class:`~syncpb.errors.AlreadyCalledError`; with one, it is not
          (Twisted's rule: the canceller stops the producer), unless the
          canceller calls :meth:`_ignore_next_fire` because it was too late.
        * Fired, with its chain paused on a Deferred a callback returned:
          that Deferred is cancelled instead.
        * Otherwise (it has a result): nothing happens.

        Safe from any thread or greenlet; whoever waits in :meth:`result`
        wakes up and gets the error.

        Raises:
            BaseException: whatever the canceller raised (the Deferred is
                then left as the canceller left it).
        """
        with self._lock:
            called = self.called
            canceller = self._canceller
            inner = self._chained_to if self._paused else None
            if not called and canceller is None:
                self._suppress = True
        if called:
            if inner is not None:
                inner.cancel()
            return
        if canceller is not None:
            canceller(self)
        if self._fire_unless_called(Failure(CancelledError("the Deferred was cancelled"))):
            self._wake_source_waiters()

    def addTimeout(  # noqa: N802,N803 (Twisted's names)
        self,
        timeout: float,
        clock: Optional[Clock] = None,
        onTimeoutCancel: Optional[Callable[[Any, float], Any]] = None,
    ) -> "Deferred":
        """Cancel this Deferred if it has no result within ``timeout`` seconds.

        As Twisted's ``Deferred.addTimeout``: the timeout covers the
        callbacks added so far, not those added later; when it strikes, the
        Deferred is cancelled (:meth:`cancel`) and a resulting
        :class:`~syncpb.errors.CancelledError` becomes a
        :class:`~syncpb.errors.CallTimeout` (Twisted raises its own
        ``TimeoutError`` there); a result that comes first stops the timer.

        Args:
            timeout: seconds from now.
            clock: what schedules the timeout (anything with Twisted's
                ``callLater``); ``None`` picks one for the caller's context
                (:func:`syncpb.timers.default_clock`: the gevent hub's loop
                in a greenlet, else one shared timer thread).
            onTimeoutCancel: called as ``onTimeoutCancel(result, timeout)``
                with the result the Deferred has right after timing out
                (usually a CancelledError Failure); what it returns or raises
                replaces it. ``None`` turns CancelledError into CallTimeout.

        Returns:
            This Deferred.
        """
        expired = [False]

        def time_out() -> None:
            expired[0] = True
            self.cancel()

        call = (clock if clock is not None else default_clock()).callLater(timeout, time_out)

        def convert(value: Any) -> Any:
            if expired[0]:
                return (onTimeoutCancel or _cancelled_to_timeout)(value, timeout)
            return value

        def stop_timer(value: Any) -> Any:
            if call.active():
                call.cancel()
            return value

        self.addBoth(convert)
        return self.addBoth(stop_timer)

    def _fire_unless_called(self, result: Any) -> bool:
        """Fire with ``result`` unless the Deferred already fired.

        Args:
            result: a value or a Failure.

        Returns:
            ``True`` if this fired it.
        """
        with self._lock:
            if self.called:
                self._suppress = False  # the late firing it was kept for came first
                return False
            self.called = True
            self._canceller = None
            self._result = result
            if not self._callbacks and not self._settled_hooks:
                return True
            self._claim_locked()
        _run_chains(self)
        return True

    def _ignore_next_fire(self) -> None:
        """Ignore, once, a firing already under way (for a canceller that
        could no longer stop its producer): it raises no AlreadyCalledError."""
        with self._lock:
            if not self.called:
                self._suppress = True

    def _wake_source_waiters(self) -> None:
        """Wake who waits on the Deferred that feeds this one (``result()``
        waits there, see :func:`_find_target`), now that this one fired by
        itself. They wake early, which waiters allow: they look again."""
        source = self._fed_by
        if source is None:
            return
        with source._lock:
            hooks, source._settled_hooks = source._settled_hooks, []
        _call_hooks(hooks)

    # -- adding callbacks -------------------------------------------------

    def addCallbacks(  # noqa: N802,N803 (Twisted's names)
        self,
        callback: Callable[..., Any],
        errback: Optional[Callable[..., Any]] = None,
        callbackArgs: Iterable[Any] = (),
        callbackKeywords: Optional[Dict[str, Any]] = None,
        errbackArgs: Iterable[Any] = (),
        errbackKeywords: Optional[Dict[str, Any]] = None,
    ) -> "Deferred":
        """Add a callback and an errback as one step of the chain.

        Args:
            callback: called as ``callback(result, *callbackArgs,
                **callbackKeywords)`` on the success path.
            errback: called likewise with a Failure on the error path;
                ``None`` passes the Failure on unchanged.
            callbackArgs: extra positional arguments for ``callback``.
            callbackKeywords: extra keyword arguments for ``callback``.
            errbackArgs: extra positional arguments for ``errback``.
            errbackKeywords: extra keyword arguments for ``errback``.

        Returns:
            This Deferred.

        Raises:
            TypeError: ``callback`` or ``errback`` is not callable.
        """
        if not callable(callback) or not (errback is None or callable(errback)):
            raise TypeError("addCallbacks() needs callables")
        self._add(
            (callback, tuple(callbackArgs), dict(callbackKeywords or {})),
            (errback, tuple(errbackArgs), dict(errbackKeywords or {})),
        )
        return self

    def addCallback(  # noqa: N802
        self, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> "Deferred":
        """Add a callback for the success path; errors pass it by.

        Args:
            callback: called as ``callback(result, *args, **kwargs)``.
            *args: extra positional arguments.
            **kwargs: extra keyword arguments.

        Returns:
            This Deferred.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        _require_callable(callback)
        self._add((callback, args, kwargs), (None, (), {}))
        return self

    def addErrback(  # noqa: N802
        self, errback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> "Deferred":
        """Add an errback for the error path; results pass it by.

        Args:
            errback: called as ``errback(failure, *args, **kwargs)``.
            *args: extra positional arguments.
            **kwargs: extra keyword arguments.

        Returns:
            This Deferred.

        Raises:
            TypeError: ``errback`` is not callable.
        """
        _require_callable(errback)
        self._add((None, (), {}), (errback, args, kwargs))
        return self

    def addBoth(  # noqa: N802
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> "Deferred":
        """Add ``func`` as both callback and errback.

        Args:
            func: called as ``func(result_or_failure, *args, **kwargs)``.
            *args: extra positional arguments.
            **kwargs: extra keyword arguments.

        Returns:
            This Deferred.

        Raises:
            TypeError: ``func`` is not callable.
        """
        _require_callable(func)
        self._add((func, args, kwargs), (func, args, kwargs))
        return self

    def chainDeferred(self, d: "Deferred") -> "Deferred":  # noqa: N802
        """Fire ``d`` with this Deferred's result at this point of the chain.

        Afterwards this chain continues with ``None`` (what ``d.callback``
        returns). ``d.result()`` waits through this Deferred's waiter.

        Args:
            d: the Deferred to fire.

        Returns:
            This Deferred.
        """
        d._fed_by = self
        return self.addCallbacks(d.callback, d.errback)

    def _add(self, on_success: _Step, on_error: _Step) -> None:
        """Queue one chain step, running the chain here if it is idle.

        Args:
            on_success: ``(function or None, args, kwargs)`` for results.
            on_error: the same for Failures.
        """
        with self._lock:
            self._callbacks.append((on_success, on_error))
            claimed = self._claim_if_idle_locked()
        if claimed:
            _run_chains(self)

    # -- state ------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """``True`` while the chain waits for a Deferred a callback returned."""
        return self._paused

    @property
    def final(self) -> bool:
        """``True`` once fired, not paused and no callback is running.

        Only then is the current result the chain's result, which
        :meth:`result` returns without waiting.
        """
        with self._lock:
            return self.called and not self._running and not self._paused

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the final result and return it, or raise its error.

        Raising an error marks it as handled. The Deferred keeps its result,
        so calling this again returns or raises the same.

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.

        Returns:
            The final result.

        Raises:
            CallTimeout: ``timeout`` expired before the result was final.
            RuntimeError: called from this Deferred's own running chain, or
                the chain waits for itself through a cycle of Deferreds.
            BaseException: the final result was a Failure; its exception is
                raised with its original traceback.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.final:
            _wait_for_progress(self, _remaining(deadline, timeout))
        return self._final_value()

    def _final_value(self) -> Any:
        """Return the final result, or raise it if it is a Failure.

        Returns:
            The final result.

        Raises:
            BaseException: the Failure's exception.
        """
        with self._lock:
            value = self._result
            if isinstance(value, Failure):
                self._consumed = True
        if isinstance(value, Failure):
            value.raiseException()
        return value

    def _snapshot(self) -> Tuple[bool, bool, Optional["Deferred"]]:
        """Return a consistent view of the state :meth:`result` walks.

        Returns:
            ``(called, running, deferred the chain is paused on or None)``.
        """
        with self._lock:
            chained = self._chained_to if self._paused else None
            return self.called, self._running, chained

    # -- settled hooks ----------------------------------------------------

    def _add_settled_hook(self, hook: Hook) -> None:
        """Call ``hook()`` once the Deferred has fired and its chain stopped.

        The chain stops when it runs out of callbacks or pauses on another
        Deferred. If that is already the case, ``hook`` is called at once.
        Each hook is called at most once, in the thread that stopped the
        chain; it must be quick and must not raise.

        Args:
            hook: a function taking no arguments.
        """
        with self._lock:
            settled = self.called and not self._running
            if not settled:
                self._settled_hooks.append(hook)
        if settled:
            hook()

    def _remove_settled_hook(self, hook: Hook) -> None:
        """Forget a hook that has not been called yet (no error if absent).

        Args:
            hook: a hook given to :meth:`_add_settled_hook`.
        """
        with self._lock:
            if hook in self._settled_hooks:
                self._settled_hooks.remove(hook)

    # -- running the chain ------------------------------------------------

    def _claim_locked(self) -> None:
        """Mark the chain as run by the caller (lock held)."""
        self._running = True
        self._runner = _whoami()

    def _claim_if_idle_locked(self) -> bool:
        """Claim the chain if it has fired and is idle (lock held).

        Returns:
            ``True`` if the caller must now run the chain.
        """
        if self.called and not self._running and not self._paused:
            self._claim_locked()
            return True
        return False

    def _advance(self) -> Optional["Deferred"]:
        """Run queued steps until the chain stops or feeds a paused chain.

        Returns:
            A paused Deferred that this thread resumed and must run next,
            or ``None`` once this chain has stopped (its hooks called).
        """
        while True:
            entry, current, hooks = self._next_entry()
            if entry is None:
                _call_hooks(hooks)
                return None
            if isinstance(entry, _Continue):
                if entry.outer._resume(self._hand_over()):
                    return entry.outer
                continue
            self._run_step(entry, current)

    def _next_entry(self) -> Tuple[Optional[_Entry], Any, List[Hook]]:
        """Take the next step, or stop the chain if there is none to run.

        Returns:
            ``(entry, current result, [])``, or ``(None, None, hooks)`` after
            stopping, with the settled hooks the caller must now call.
        """
        with self._lock:
            if self._paused or not self._callbacks:
                self._running = False
                self._runner = None
                hooks, self._settled_hooks = self._settled_hooks, []
                return None, None, hooks
            return self._callbacks.pop(0), self._result, []

    def _run_step(self, entry: _Pair, current: Any) -> None:
        """Call one callback or errback and store what it produced.

        Args:
            entry: the ``(on_success, on_error)`` step.
            current: the current result.
        """
        value = _invoke(entry, current)
        if isinstance(value, Deferred):
            value = self._chain_to(value)
            if value is _PAUSED:
                return
        with self._lock:
            self._result = value
            self._consumed = False

    def _chain_to(self, inner: "Deferred") -> Any:
        """Continue with ``inner``'s result, pausing if it has none yet.

        Args:
            inner: the Deferred a callback returned.

        Returns:
            ``inner``'s final result (taken from it), or ``_PAUSED``.
        """
        if inner is self:
            return Failure(TypeError("a callback returned its own Deferred"))
        with self._lock:
            self._result = inner
            self._paused = True
            self._chained_to = inner
        taken, value = inner._take_or_attach(self)
        if not taken:
            return _PAUSED
        with self._lock:
            self._paused = False
            self._chained_to = None
        return value

    def _take_or_attach(self, outer: "Deferred") -> Tuple[bool, Any]:
        """Give ``outer`` the final result now, or promise it for later.

        Args:
            outer: the paused Deferred waiting for this one.

        Returns:
            ``(True, result)`` if the result was final (this Deferred keeps
            ``None``), else ``(False, None)`` after queueing the hand-over.
        """
        with self._lock:
            if self.called and not self._running and not self._paused:
                value, self._result = self._result, None
                return True, value
            self._callbacks.append(_Continue(outer))
            return False, None

    def _hand_over(self) -> Any:
        """Give away the current result, keeping ``None`` in its place.

        Returns:
            The current result.
        """
        with self._lock:
            value, self._result = self._result, None
            return value

    def _resume(self, value: Any) -> bool:
        """Unpause with the result of the Deferred the chain waited for.

        Args:
            value: that Deferred's result.

        Returns:
            ``True`` if the caller claimed the chain and must run it.
        """
        with self._lock:
            self._result = value
            self._consumed = False
            self._paused = False
            self._chained_to = None
            return self._claim_if_idle_locked()

    # -- garbage collection and display ----------------------------------

    def __del__(self) -> None:
        """Log a final Failure that nobody handled."""
        failure = getattr(self, "_result", None)
        if not isinstance(failure, Failure) or self._consumed or self._paused:
            return
        self._consumed = True
        try:
            _log.error("Unhandled error in Deferred:\n%s", failure.getTraceback())
        except Exception:  # noqa: BLE001 (interpreter shutdown, broken logging)
            pass

    def __repr__(self) -> str:
        """Return e.g. ``<Deferred at 0x7f.. current result: 3>``."""
        with self._lock:
            called, running, result = self.called, self._running, self._result
            chained = self._chained_to if self._paused else None
        if chained is not None:
            state = f" waiting on Deferred at 0x{id(chained):x}"
        elif not called:
            state = " pending"
        else:
            running_text = " (running callbacks)" if running else ""
            state = f" current result: {result!r}{running_text}"
        return f"<Deferred at 0x{id(self):x}{state}>"


class _PausedMarker:
    """Type of :data:`_PAUSED`."""

    def __repr__(self) -> str:
        """Return ``_PAUSED``."""
        return "_PAUSED"


#: Returned by :meth:`Deferred._chain_to` when the chain had to pause.
_PAUSED = _PausedMarker()


def _run_chains(first: Deferred) -> None:
    """Run ``first``'s chain, and every paused chain it feeds, iteratively.

    Args:
        first: a Deferred whose chain the caller has claimed.
    """
    stack = [first]
    while stack:
        resumed = stack[-1]._advance()
        if resumed is None:
            stack.pop()
        else:
            stack.append(resumed)


def _invoke(entry: _Pair, current: Any) -> Any:
    """Call the callback or errback of a step that suits ``current``.

    Args:
        entry: the ``(on_success, on_error)`` step.
        current: the current result.

    Returns:
        What the function returned, ``current`` when there is no function,
        or a Failure of what it raised.
    """
    on_success, on_error = entry
    func, args, kwargs = on_error if isinstance(current, Failure) else on_success
    if func is None:
        return current
    try:
        return func(current, *args, **kwargs)
    except BaseException:  # noqa: BLE001 (Twisted's rule: anything raised)
        return Failure()


def _call_hooks(hooks: List[Hook]) -> None:
    """Call settled hooks, logging (not raising) their errors.

    Args:
        hooks: the hooks to call.
    """
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001
            _log.exception("Error in a Deferred settled hook")


def _cancelled_to_timeout(value: Any, timeout: float) -> Any:
    """The default ``onTimeoutCancel`` of :meth:`Deferred.addTimeout`.

    Args:
        value: the result right after the timeout cancelled the Deferred.
        timeout: the timeout, for the message.

    Returns:
        ``value`` unchanged, unless it is a CancelledError Failure.

    Raises:
        CallTimeout: ``value`` is a CancelledError Failure.
    """
    if isinstance(value, Failure) and value.check(CancelledError) is not None:
        raise CallTimeout(f"the Deferred timed out after {format_seconds(timeout)}")
    return value


def _as_failure(fail: Union[Failure, BaseException, None]) -> Failure:
    """Turn what :meth:`Deferred.errback` accepts into a Failure.

    Args:
        fail: a Failure, an exception instance, or ``None`` for the
            exception currently being handled.

    Returns:
        The Failure.

    Raises:
        TypeError: ``fail`` is of another type, or it is ``None`` and no
            exception is being handled.
    """
    if isinstance(fail, Failure):
        return fail
    if fail is None or isinstance(fail, BaseException):
        return Failure(fail)
    raise TypeError(f"errback() needs a Failure or an exception, not {fail!r}")


def _require_callable(func: Any) -> None:
    """Reject a callback that cannot be called.

    Args:
        func: the would-be callback.

    Raises:
        TypeError: ``func`` is not callable.
    """
    if not callable(func):
        raise TypeError(f"{func!r} is not callable")


# -- waiting --------------------------------------------------------------


def _current_greenlet() -> Any:
    """Return the running greenlet, or ``None`` if greenlet is not in use.

    Returns:
        ``greenlet.getcurrent()`` when the greenlet module is loaded.
    """
    module = sys.modules.get("greenlet")
    return module.getcurrent() if module is not None else None


def _whoami() -> Tuple[int, Any]:
    """Identify the running thread and greenlet.

    Returns:
        ``(OS thread id, current greenlet or None)``.
    """
    return _get_ident(), _current_greenlet()


class DefaultWaiter:
    """Blocks exactly the caller until a Deferred settles: the calling
    greenlet inside a running gevent hub, the calling thread otherwise
    (:class:`syncpb.waiting.Wakeup`).

    "Settles" means: has fired and its chain has stopped running (finished
    or paused on another Deferred).
    """

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        """Block until ``deferred`` settles or ``timeout`` expires.

        Args:
            deferred: the Deferred to wait for.
            timeout: seconds to wait at most, ``None`` for no limit.
        """
        wakeup = Wakeup()
        deferred._add_settled_hook(wakeup.set)
        try:
            wakeup.wait(timeout)
        finally:
            deferred._remove_settled_hook(wakeup.set)


#: The waiter used for a Deferred whose ``_waiter`` is ``None``.
DEFAULT_WAITER = DefaultWaiter()


def _remaining(deadline: Optional[float], timeout: Optional[float]) -> Optional[float]:
    """Return the seconds left until ``deadline``.

    Args:
        deadline: a :func:`time.monotonic` time, or ``None`` for no limit.
        timeout: the original timeout, for the error message.

    Returns:
        Seconds left, or ``None`` without a deadline.

    Raises:
        CallTimeout: the deadline has passed.
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise CallTimeout(f"no result within {format_seconds(timeout)}")
    return left


def _find_target(deferred: Deferred) -> Tuple[Optional[Deferred], bool]:
    """Find the innermost Deferred that ``deferred``'s result waits for.

    Follows paused chains to the Deferred they wait on, and an unfired
    Deferred without its own waiter to the Deferred that feeds it through
    :meth:`Deferred.chainDeferred`.

    Args:
        deferred: where to start.

    Returns:
        ``(target, fired)``: an unfired target (``fired`` false), one that
        fired but is still running callbacks (``fired`` true), or
        ``(None, True)`` when the result is final.

    Raises:
        RuntimeError: paused chains wait for each other in a cycle.
    """
    seen: Set[int] = set()
    current = deferred
    while id(current) not in seen:
        seen.add(id(current))
        called, running, chained = current._snapshot()
        if chained is not None:
            current = chained
        elif not called:
            source = current._fed_by
            if current._waiter is not None or source is None or source.final:
                return current, False
            current = source
        elif running:
            return current, True
        else:
            return None, True
    if current.called:
        raise RuntimeError(f"{deferred!r} waits for itself through a cycle")
    return current, False


def _wait_for_progress(deferred: Deferred, timeout: Optional[float]) -> None:
    """Wait once, through the right waiter, for ``deferred`` to move on.

    Args:
        deferred: the Deferred whose final result is wanted.
        timeout: seconds to wait at most, ``None`` for no limit.

    Raises:
        RuntimeError: the wait would be for a chain the caller is running,
            or for a cycle of paused chains.
    """
    target, fired = _find_target(deferred)
    if target is None:
        return
    if not fired:
        (target._waiter or DEFAULT_WAITER).wait(target, timeout)
        return
    if target._runner == _whoami():
        raise RuntimeError(f"waiting for {target!r} from its own callback would deadlock")
    DEFAULT_WAITER.wait(target, timeout)


# -- helpers --------------------------------------------------------------


class _GatherWaiter:
    """Waits for a :func:`gather` Deferred by driving its children."""

    def __init__(self, children: List[Deferred]) -> None:
        """Remember the gathered Deferreds.

        Args:
            children: the Deferreds :func:`gather` collects.
        """
        self._children = children

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        """Drive the first child that needs its own waiter, else just wait.

        A child whose target has its own waiter (say, a connection that must
        read its socket) is waited for through it. When no child needs
        that, this blocks until ``deferred`` itself fires, whichever child
        completes it.

        Args:
            deferred: the gathering Deferred.
            timeout: seconds to wait at most, ``None`` for no limit.
        """
        for child in self._children:
            target, fired = _find_target(child)
            if target is not None and not fired and target._waiter is not None:
                target._waiter.wait(target, timeout)
                return
        DEFAULT_WAITER.wait(deferred, timeout)


class _GatherState:
    """Collects the results of :func:`gather`'s children."""

    def __init__(self, gathered: Deferred, count: int, consume_errors: bool) -> None:
        """Prepare to collect ``count`` results.

        Args:
            gathered: the Deferred to fire with the list.
            count: how many children there are.
            consume_errors: whether child errors are handled here.
        """
        self._gathered = gathered
        self._results: List[Any] = [None] * count
        self._missing = count
        self._done = False
        self._consume_errors = consume_errors
        self._lock = _allocate_lock()

    def succeeded(self, value: Any, index: int) -> Any:
        """Record child ``index``'s result; fire once all are in.

        Args:
            value: the child's result.
            index: the child's position.

        Returns:
            ``value``, unchanged, for the child's later callbacks.
        """
        with self._lock:
            self._results[index] = value
            self._missing -= 1
            complete = self._missing == 0 and not self._done
            self._done = self._done or complete
        if complete:
            self._gathered.callback(list(self._results))
        return value

    def failed(self, failure: Failure, index: int) -> Optional[Failure]:
        """Fail the gathering Deferred with the first failure to arrive.

        Args:
            failure: the child's failure.
            index: the child's position (unused, kept for symmetry).

        Returns:
            ``None`` if errors are consumed, else ``failure``.
        """
        with self._lock:
            first = not self._done
            self._done = True
        if first:
            self._gathered.errback(failure)
        return None if self._consume_errors else failure


def gather(deferreds: Iterable[Deferred], consume_errors: bool = True) -> Deferred:
    """Combine Deferreds into one that fires with the list of their results.

    The list is in the order of ``deferreds``. As soon as any of them fails,
    the combined Deferred fails with that same Failure (the first one to
    arrive, not the first in order) without waiting for the others. Its
    :meth:`~Deferred.result` drives the children's own waiters. Cancelling
    it before it fired cancels every child (as Twisted's ``DeferredList``
    does), so it fails with the first child's CancelledError.

    Args:
        deferreds: the Deferreds to wait for.
        consume_errors: if true, every child's failure counts as handled
            (the child continues with ``None``); if false, children keep
            their failures and report them if nobody else handles them.

    Returns:
        The combined Deferred; already fired for an empty input.
    """
    children = list(deferreds)
    gathered = Deferred(canceller=lambda _: _cancel_all(children))
    gathered._waiter = _GatherWaiter(children)
    if not children:
        gathered.callback([])
        return gathered
    state = _GatherState(gathered, len(children), consume_errors)
    for index, child in enumerate(children):
        child.addCallbacks(
            state.succeeded, state.failed, callbackArgs=(index,), errbackArgs=(index,)
        )
    return gathered


def _cancel_all(children: List[Deferred]) -> None:
    """Cancel each of :func:`gather`'s children, logging what a canceller raises.

    Args:
        children: the gathered Deferreds.
    """
    for child in children:
        try:
            child.cancel()
        except Exception:  # noqa: BLE001 (the others are still cancelled)
            _log.exception("Error in a Deferred canceller")


def succeed(value: Any) -> Deferred:
    """Return a Deferred already fired with ``value``.

    Args:
        value: the result; must not be a Deferred.

    Returns:
        The fired Deferred.

    Raises:
        TypeError: ``value`` is a Deferred.
    """
    d = Deferred()
    d.callback(value)
    return d


def fail(error: Union[Failure, BaseException, None] = None) -> Deferred:
    """Return a Deferred already failed with ``error``.

    Args:
        error: a Failure, an exception instance, or ``None`` for the
            exception currently being handled.

    Returns:
        The failed Deferred.

    Raises:
        TypeError: as for :meth:`Deferred.errback`.
    """
    d = Deferred()
    d.errback(error)
    return d


def maybe_deferred(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
    """Call ``func`` and return its outcome as a Deferred.

    Args:
        func: the function to call.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        The Deferred ``func`` returned, or a Deferred fired with its return
        value, failed with the Failure it returned, or failed with what it
        raised.
    """
    try:
        value = func(*args, **kwargs)
    except BaseException:  # noqa: BLE001 (Twisted's rule: anything raised)
        return fail(Failure())
    if isinstance(value, Deferred):
        return value
    if isinstance(value, Failure):
        return fail(value)
    return succeed(value)


#: Twisted's spelling of :func:`maybe_deferred`.
maybeDeferred = maybe_deferred  # noqa: N816
