"""Where the compiled codec is chosen: the optional Cython modules
``syncpb._c*`` (built from ``syncpb/_c*.pyx`` when installing) or the
pure-Python modules they mirror (layer L0).

Every compiled module has a pure-Python twin that is the reference: the
same inputs give the same values, bytes and errors, and the test suite
runs against both (``_csockio`` mirrors the standard library instead: a
socket's methods, ``_thread``'s lock). :func:`load` hands out the compiled one unless
``SYNCPB_PURE=1`` is set or it was not built (no compiler or no Cython at
install time); the first miss logs one line saying so, and syncpb runs in
pure Python.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Dict, Optional, Tuple

__all__ = ["CODEC_MODULES", "codec_compiled", "load", "pure_forced"]

log = logging.getLogger("syncpb")

_loaded: Dict[str, Optional[ModuleType]] = {}
_said = False


def pure_forced() -> bool:
    """``SYNCPB_PURE=1``: use the pure-Python modules only."""
    return os.environ.get("SYNCPB_PURE", "0") == "1"


def load(name: str) -> Optional[ModuleType]:
    """The compiled module ``syncpb.<name>``, or None for its Python twin.

    Args:
        name: the module's name inside the package, e.g. ``"_cframer"``.
    """
    global _said
    if name not in _loaded:
        module: Optional[ModuleType] = None
        if not pure_forced():
            try:
                module = importlib.import_module(f"{__package__}.{name}")
            except ImportError as exc:
                if not _said:
                    _said = True
                    log.info("syncpb: the compiled codec is not built (%s); using the "
                             "pure-Python one (same results, slower)", exc)
        _loaded[name] = module
    return _loaded[name]


#: the compiled modules (the codec, the broker core, the sessions core), each mirroring
#: a pure-Python one
CODEC_MODULES: Tuple[str, ...] = ("_cframer", "_creader", "_cwriter", "_cbrokercore",
                                  "_csockio", "_csessioncore")


def codec_compiled() -> bool:
    """Every compiled module (the codec and the cores) is built and in use."""
    return bool(CODEC_MODULES) and all(load(name) is not None for name in CODEC_MODULES)
