"""syncpb: Twisted's Perspective Broker for blocking, threaded and gevent code.

Quick start::

    import syncpb

    class Calculator(syncpb.Root):
        def remote_calculate(self, a, b):
            return a + b

    server = syncpb.Server(Calculator())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    with syncpb.connect(address) as conn:
        assert conn.root.calculate(1, 2) == 3
    server.stop()
"""

from .broker import Limits
from .cache import Cacheable, ObserverList, RemoteCache
from .client import Connection, connect
from .copyable import (Copyable, RemoteCopy, UnjellyableRegistry, default_registry,
                       setUnjellyableFactoryForClass, setUnjellyableForClass)
from .deferred import Deferred, fail, gather, maybe_deferred, succeed
from .errors import (AlreadyCalledError, BananaError, CallTimeout, CancelledError, CertificateExpired,
                     CertificateUntrusted, ClientCertificateRequired, ConnectionFailed,
                     ConnectionLost, DatabaseConnectionLost, DatabaseError, DatabaseUnavailable,
                     DeadReferenceError, Error, HostnameMismatch, InsecureJelly, ListenFailed,
                     LoginFailed, NoSuchMethod, NotTLSPeer, PoolClosed, PoolSaturated, ProtocolError,
                     RemoteError, SyncPBError, TLSError, Unauthorized, UnauthorizedLogin,
                     UnhandledCredentials)
from .failure import Failure
from .flavors import Avatar, Referenceable, Root, Viewable
from .heap import tune_malloc
from .heartbeat import Heartbeat
from .jelly import SecurityOptions, Unpersistable
from .keepalive import Keepalive
from .reference import RemoteReference
from .reconnect import Backoff, NotConnected, ReconnectingClient
from .passwords import FilePasswordChecker, add_user
from .peercheck import ClientCertificate, UnixPeer, UnixPeerChecker
from .portal import (AllowAnonymousAccess, Anonymous, ChallengeResponse, InMemoryPasswordChecker,
                     IPerspective, Portal, UsernamePassword)
from .server import Server
from .waiting import wait_mode
from . import util  # paging: syncpb.util.getAllPages, StringPager, ...

__version__ = "0.1.0.dev0"

__all__ = [
    # connecting and serving
    "connect", "Connection", "Server", "Limits", "SecurityOptions", "wait_mode",
    "Keepalive", "Heartbeat", "ReconnectingClient", "Backoff", "tune_malloc",
    # the object model
    "Root", "Referenceable", "RemoteReference", "Unpersistable",
    "Avatar", "Viewable", "Copyable", "RemoteCopy", "Cacheable", "RemoteCache", "ObserverList",
    "setUnjellyableForClass", "setUnjellyableFactoryForClass",
    "UnjellyableRegistry", "default_registry",
    "util",
    # logins
    "Portal", "IPerspective", "InMemoryPasswordChecker", "FilePasswordChecker", "add_user",
    "AllowAnonymousAccess", "UnixPeerChecker", "UnixPeer", "ClientCertificate",
    "ChallengeResponse", "UsernamePassword", "Anonymous",
    # results
    "Deferred", "Failure", "gather", "succeed", "fail", "maybe_deferred",
    # errors
    "SyncPBError", "Error", "RemoteError", "ConnectionLost", "ConnectionFailed", "NotConnected",
    "ListenFailed",
    "DeadReferenceError", "NoSuchMethod", "InsecureJelly", "BananaError", "ProtocolError",
    "CallTimeout", "CancelledError", "AlreadyCalledError", "PoolSaturated", "PoolClosed",
    "DatabaseError", "DatabaseConnectionLost", "DatabaseUnavailable",
    "TLSError", "CertificateUntrusted", "CertificateExpired", "HostnameMismatch",
    "ClientCertificateRequired", "NotTLSPeer",
    "Unauthorized", "LoginFailed", "UnauthorizedLogin", "UnhandledCredentials",
]
