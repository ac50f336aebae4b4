"""Pass-by-copy objects and the registry of local classes for copy tags (layer L0.5).

A :class:`Copyable` travels as ``[tag, state]``: the *tag* names its type
(by default ``module.Class``) and the *state* is what
:meth:`~Copyable.getStateToCopyFor` returns for the receiving perspective
(by default the instance's ``__dict__``). The receiver looks the tag up in
an :class:`UnjellyableRegistry` and builds an instance of the registered
:class:`RemoteCopy` subclass without calling its constructor, then hands it
the state through :meth:`~RemoteCopy.setCopyableState`. A tag nobody
registered is refused (:class:`~syncpb.InsecureJelly`) and nothing is built.

Registries are objects. :data:`default_registry` is the process-wide one
that :func:`setUnjellyableForClass` fills, as Twisted's global table is; a
connection or server can be given its own registry, usually a
:meth:`~UnjellyableRegistry.child` of the default one, so its registrations
stay local while the process-wide ones still apply.

Nothing here knows about connections; the broker decides when an object is
a Copyable and the codec asks the registry what to build.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

__all__ = [
    "Copyable", "RemoteCopy", "UnjellyableRegistry", "default_registry",
    "setUnjellyableForClass", "setUnjellyableFactoryForClass", "qual", "copy_tag",
]

ClassName = Union[str, bytes, type]
#: What a registry entry builds: ``("copy", cls)``, ``("cache", cls)`` or ``("factory", f)``.
Entry = Tuple[str, Any]


def qual(cls: type) -> str:
    """Twisted's name for a class: ``module.ClassName``."""
    return f"{cls.__module__}.{cls.__name__}"


def copy_tag(classname: ClassName) -> bytes:
    """The copy tag for a class, a ``str`` or a ``bytes`` tag."""
    if isinstance(classname, type):
        classname = qual(classname)
    if isinstance(classname, str):
        classname = classname.encode("utf-8")
    if not isinstance(classname, bytes) or not classname:
        raise TypeError(f"a copy tag is a class, str or bytes, not {classname!r}")
    return classname


class Copyable:
    """An object sent by value: the receiver gets a copy of its state."""

    def getStateToCopy(self) -> Any:  # noqa: N802 - Twisted's name
        """The state to send; by default the instance's ``__dict__``."""
        return self.__dict__

    def getStateToCopyFor(self, perspective: Any) -> Any:  # noqa: N802
        """The state to send to ``perspective`` (None without a login)."""
        return self.getStateToCopy()

    def getTypeToCopy(self) -> bytes:  # noqa: N802
        """The copy tag; by default ``module.ClassName``."""
        return qual(type(self)).encode("utf-8")

    def getTypeToCopyFor(self, perspective: Any) -> bytes:  # noqa: N802
        """The copy tag for ``perspective``."""
        return self.getTypeToCopy()


class RemoteCopy:
    """The local class a received copy is built as.

    Built without calling ``__init__`` (a copy is not constructed, it is
    restored), then given the state with :meth:`setCopyableState`.
    """

    #: How the codec builds registered instances of this class.
    pb_form = "copy"

    def setCopyableState(self, state: Any) -> None:  # noqa: N802 - Twisted's name
        """Take the received state; by default it becomes ``__dict__``
        (byte-string keys from older peers are decoded)."""
        if not state:
            state = {}
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__qualname__} got a {type(state).__name__} "
                            "state; override setCopyableState to accept it")
        self.__dict__ = {(k.decode("utf-8") if isinstance(k, bytes) else k): v
                         for k, v in state.items()}


class UnjellyableRegistry:
    """Which local class (or factory) builds the objects of each copy tag.

    Args:
        parent: a registry consulted for tags this one does not know
            (registrations here never change the parent).
    """

    def __init__(self, parent: Optional["UnjellyableRegistry"] = None) -> None:
        self.parent = parent
        self._entries: Dict[bytes, Entry] = {}  # one dict operation per change: thread-safe

    def register(self, classname: ClassName, unjellyable: type) -> None:
        """Build objects tagged ``classname`` as instances of ``unjellyable``
        (a :class:`RemoteCopy` or ``RemoteCache`` subclass)."""
        form = getattr(unjellyable, "pb_form", None)
        if not isinstance(unjellyable, type) or form not in ("copy", "cache"):
            raise TypeError(f"{unjellyable!r} is not a RemoteCopy or RemoteCache subclass; "
                            "use register_factory for a factory function")
        self._set(copy_tag(classname), (form, unjellyable))

    def register_factory(self, classname: ClassName, factory: Callable[[Any], Any]) -> None:
        """Build objects tagged ``classname`` with ``factory(state)``."""
        if not callable(factory):
            raise TypeError(f"{factory!r} is not callable")
        self._set(copy_tag(classname), ("factory", factory))

    def unregister(self, classname: ClassName) -> None:
        """Forget this registry's entry for ``classname`` (the parent's stays)."""
        self._entries.pop(copy_tag(classname), None)

    def _set(self, tag: bytes, entry: Entry) -> None:
        self._entries[tag] = entry

    def lookup(self, tag: bytes) -> Optional[Entry]:
        """The entry for ``tag`` here or in a parent, or None."""
        registry: Optional[UnjellyableRegistry] = self
        while registry is not None:
            entry = registry._entries.get(tag)
            if entry is not None:
                return entry
            registry = registry.parent
        return None

    def __contains__(self, classname: ClassName) -> bool:
        return self.lookup(copy_tag(classname)) is not None

    def child(self) -> "UnjellyableRegistry":
        """A new registry whose lookups fall back to this one."""
        return UnjellyableRegistry(parent=self)


#: The process-wide registry (Twisted's global one); connections use it
#: unless they are given another.
default_registry = UnjellyableRegistry()


def setUnjellyableForClass(classname: ClassName, unjellyable: type,  # noqa: N802
                           registry: Optional[UnjellyableRegistry] = None) -> None:
    """Receive objects tagged ``classname`` (a class, or its tag as str or
    bytes) as instances of ``unjellyable``, in ``registry`` (default: the
    process-wide one)."""
    (default_registry if registry is None else registry).register(classname, unjellyable)


def setUnjellyableFactoryForClass(classname: ClassName,  # noqa: N802 - Twisted's name
                                  factory: Callable[[Any], Any],
                                  registry: Optional[UnjellyableRegistry] = None) -> None:
    """Receive objects tagged ``classname`` as ``factory(state)``."""
    (default_registry if registry is None else registry).register_factory(classname, factory)
