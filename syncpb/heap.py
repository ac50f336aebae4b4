"""Keep large messages from costing page faults: glibc's heap thresholds.

A message of a few hundred KiB becomes a few ``bytes`` objects of its size
(the message read, the strings decoded from it, the answer's pieces), made
and dropped once per call. glibc serves them from the main heap and, when
two of them are freed together at its top, gives the memory back to the
kernel (``M_TRIM_THRESHOLD``) only to grow the heap again at the next call:
every page of every such message then costs a page fault. Whether that
happens depends on the order in which a process frees its objects, so it
comes and goes with scheduling: a 256 KiB echo served on its own CPU (as
on two machines) took about 85 page faults and 3 ``brk`` calls per call
and ran at half the speed it had with client and server on one CPU
(benchmarks/README.md, "W3 on two CPUs").

:func:`tune_malloc` raises the two thresholds with ``mallopt``, so the
heap keeps up to ``trim_threshold`` bytes of free memory at its top and
allocations under ``mmap_threshold`` come from the heap. It changes the
whole process, so the library never calls it on its own: a program that
passes large messages calls it once at start (``syncpb serve`` does). It
does nothing but return False where the C library is not glibc.

A process that raised the trim threshold also keeps what its start-up
freed (imports, set-up: about 0.45 MiB for the benchmark's server).
:func:`release_free_memory` gives the heap's free memory back once; a
:class:`~syncpb.server.Server` calls it when it starts serving, if
:func:`tune_malloc` was called.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

from .speedups import pure_forced

__all__ = ["tune_malloc", "release_free_memory", "TRIM_THRESHOLD", "MMAP_THRESHOLD"]

log = logging.getLogger("syncpb")

#: Free memory the heap keeps at its top instead of giving it back.
TRIM_THRESHOLD = 32 * 1024 * 1024
#: Allocations at least this large are served by ``mmap`` (each its own
#: mapping, faulted in page by page and unmapped when freed).
MMAP_THRESHOLD = 4 * 1024 * 1024

# glibc's mallopt parameters (malloc.h), and the bounds it takes: a C int
# for both; glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB
# on 64-bit systems, 512 KiB on 32-bit ones).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2 ** 31 - 1
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024 if sys.maxsize > 2 ** 32 else 512 * 1024


#: True once tune_malloc() raised the thresholds in this process.
_tuned = False


def _libc_function(name: str) -> Optional[Callable[..., int]]:
    """glibc's ``name`` (``mallopt`` or ``malloc_trim``) when this process's
    C library is glibc, else None.

    The compiled ``syncpb._heap`` is preferred (``SYNCPB_PURE=1`` leaves it
    out); without it, ctypes (imported only then: it costs a process about
    0.6 MiB) calls it through the process's own symbols (``CDLL(None)``):
    nothing is searched for or loaded.
    """
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    if not version or not version.startswith("glibc"):
        return None
    if not pure_forced():  # SYNCPB_PURE=1 leaves the extension out, as the codec's
        try:
            from . import _heap  # type: ignore[attr-defined]
            return getattr(_heap, name)  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            pass
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _mallopt() -> Optional[Callable[[int, int], int]]:
    """glibc's ``mallopt`` when this process's C library is glibc, else None."""
    return _libc_function("mallopt")


def release_free_memory() -> bool:
    """Give the heap's free memory back to the kernel now (glibc's
    ``malloc_trim(0)``), if :func:`tune_malloc` was called in this process:
    with the raised trim threshold, what a process freed while starting
    stays with it otherwise. Without the raised threshold glibc gives it
    back as it goes, so this does nothing then.

    Returns:
        True when memory was given back; False otherwise (nothing to give,
        not tuned, or not glibc).
    """
    if not _tuned:
        return False
    malloc_trim = _libc_function("malloc_trim")
    return bool(malloc_trim is not None and malloc_trim(0))


def tune_malloc(trim_threshold: int = TRIM_THRESHOLD,
                mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Raise glibc's heap trim and mmap thresholds for this process.

    Args:
        trim_threshold: bytes of free memory the heap may keep at its top
            (0 to 2**31 - 1).
        mmap_threshold: the size from which an allocation gets its own
            mapping (1 byte to 32 MiB on 64-bit systems, glibc's limit).

    Returns:
        True when both were set; False where the C library is not glibc
        (nothing is changed then).

    Raises:
        ValueError: a threshold out of those bounds (nothing is changed).

    Setting either threshold turns off glibc's own adjustment of both
    (which raises them after large blocks are freed), so both are set.
    The cost is memory: after a burst of large messages the process keeps
    up to ``trim_threshold`` bytes it no longer uses, and freed blocks in
    the middle of the heap stay with the process until the heap's top is
    free.
    """
    if not 0 <= trim_threshold <= _INT_MAX:
        raise ValueError(f"trim_threshold must be 0 to {_INT_MAX} bytes, not {trim_threshold}")
    if not 0 < mmap_threshold <= _MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold must be 1 to {_MMAP_THRESHOLD_MAX} bytes "
                         f"(glibc's limit), not {mmap_threshold}")
    mallopt = _mallopt()
    if mallopt is None:
        log.debug("tune_malloc: not glibc; nothing changed")
        return False
    global _tuned
    _tuned = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)
                  and mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    return _tuned
