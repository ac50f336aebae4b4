"""Jelly: Python values to Banana bytes and back, in one pass (sans-IO, L1).

Theory of operation
-------------------
Twisted builds a Banana tree from Python values (jelly) and then encodes the
tree (banana), and does both steps backwards when receiving. Here the two
steps are fused: :class:`Writer` appends token bytes for each value straight
into a list of byte pieces, and :class:`Reader` builds Python values straight
from the bytes of a complete message. No intermediate tree exists.

Shared and cyclic structures. Twisted numbers a container on its *second*
sighting and rewrites its first occurrence as ``['reference', n, form]``.
The writer reserves an empty piece before every container it starts; on a
second sighting it fills that slot with the ``reference`` header, so the
first occurrence is wrapped retroactively without a second pass. The reader
registers lists, dicts and objects under their reference number *before*
decoding their contents, so a cycle through them resolves directly; a
``dereference`` to an immutable that is still being built (a tuple reached
through its own child list) yields a placeholder that is patched once the
tuple exists.

Security. Every list head is checked against a :class:`SecurityOptions`
object (an allow-list, one per connection or shared on purpose, never a
module global) before anything is built; a refused head raises
:class:`~syncpb.errors.InsecureJelly`. Dotted type tags are looked up among
the factories registered on that object and are never imported by name.

PB objects (references, copies) are not known here: the broker passes a
*context* whose hooks encode objects this module does not know and decode
``remote``/``local`` forms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import speedups
from .jellybase import (BASIC_TYPES, Incomplete, JellyContext, JellyError, SecurityOptions,
                        Unpersistable, with_registry)
from .jellyreader import Reader as PyReader  # the references (and the fallbacks)
from .jellywriter import Writer as PyWriter

if TYPE_CHECKING:
    from .jellyreader import Reader
    from .jellywriter import Writer
else:  # the compiled twins when built (syncpb/_creader.pyx, _cwriter.pyx), unless SYNCPB_PURE=1
    _creader, _cwriter = speedups.load("_creader"), speedups.load("_cwriter")
    Reader = PyReader if _creader is None else _creader.Reader
    Writer = PyWriter if _cwriter is None else _cwriter.Writer

__all__ = [
    "Unpersistable",
    "SecurityOptions",
    "JellyContext",
    "Writer",
    "Reader",
    "PyWriter",
    "PyReader",
    "Incomplete",
    "JellyError",
    "BASIC_TYPES",
    "with_registry",
]
