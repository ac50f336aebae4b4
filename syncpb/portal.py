"""Logins: Portal, realms, checkers and PB's challenge-response (layer L3.3).

Theory of operation
-------------------
``Server(portal)`` publishes, on each connection, a login object with
exactly Twisted's two methods (spec section 5):

* ``login(username)`` answers ``(challenge, challenger)``: 16 random bytes
  and a one-use :class:`_Challenger`. The client answers
  ``challenger.respond(MD5(MD5(password) + challenge), mind)``.
* ``loginAnonymous(mind)`` logs in without credentials when the portal has
  an :class:`AllowAnonymousAccess` checker.
* ``loginSalted(username)`` is syncpb's own third method, for checkers that
  keep salted hashes (:mod:`syncpb.passwords`): it answers the salt and
  scrypt parameters with the challenge; Twisted never calls it.

The portal hands the credentials to the first checker that accepts their
kind (``credentialInterfaces``); the checker returns the avatar id (or a
Deferred of it) or raises :class:`~syncpb.UnauthorizedLogin`. The realm's
``requestAvatar(avatarId, mind, IPerspective)`` then gives the avatar, as
``(interface, avatar, logout)``, ``(avatar, logout)`` or just the avatar.

The client receives a reference to a per-login :class:`_LoggedIn` wrapper
whose calls run the avatar's ``perspective_`` methods with the avatar as
perspective. ``logout`` runs exactly once: when the client releases that
reference or when the connection ends, whichever comes first.

The server never sees the password, only the response; so a checker must
know the password or its MD5 digest (:meth:`ChallengeResponse.checkPassword`,
:meth:`~ChallengeResponse.checkMD5Password`). The MD5 exchange keeps the
password itself off the wire and stops replays of an old response; it
does not protect the session that follows. Use TLS for that.
"""

from __future__ import annotations

# hashlib and hmac are imported where they are used: hashlib loads OpenSSL's
# libcrypto (about 3.5 MiB of memory) that a server without logins never needs.
import logging
import os
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

from .cache import METHOD_TYPES
from .deferred import Deferred, maybe_deferred
from .errors import UnauthorizedLogin, UnhandledCredentials
from .failure import Failure
from .flavors import Referenceable, Root
from .peercheck import ClientCertificate, UnixPeer, credentials_of

__all__ = ["Portal", "IPerspective", "ChallengeResponse", "Anonymous", "UsernamePassword",
           "SaltedResponse", "InMemoryPasswordChecker", "AllowAnonymousAccess", "respond",
           "proof"]

log = logging.getLogger("syncpb.portal")

#: Challenge length: 16 bytes from the OS's cryptographic source.
CHALLENGE_BYTES = 16


class IPerspective:
    """The interface a PB realm is asked for (Twisted's ``pb.IPerspective``)."""


def respond(challenge: bytes, password: Union[bytes, str]) -> bytes:
    """PB's response: ``MD5(MD5(password) + challenge)``, raw digests."""
    import hashlib
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hashlib.md5(hashlib.md5(password).digest() + challenge).digest()


class ChallengeResponse:
    """The credentials of a PB username/password login.

    Attributes:
        username: the name the client sent (bytes, as Twisted's are).
        challenge: what the server sent.
        response: what the client answered.
    """

    def __init__(self, username: bytes, challenge: bytes, response: bytes) -> None:
        self.username = username
        self.challenge = challenge
        self.response = response

    def checkPassword(self, password: Union[bytes, str]) -> bool:  # noqa: N802 - Twisted's name
        """True when the client knew ``password``."""
        import hmac
        return hmac.compare_digest(respond(self.challenge, password), self.response)

    def checkMD5Password(self, md5_password: bytes) -> bool:  # noqa: N802
        """True when the client knew the password whose raw MD5 digest is given."""
        import hashlib
        import hmac
        expected = hashlib.md5(md5_password + self.challenge).digest()
        return hmac.compare_digest(expected, self.response)


class UsernamePassword:
    """Plain credentials, for checking a password directly (tests, tools)."""

    def __init__(self, username: Union[bytes, str], password: Union[bytes, str]) -> None:
        self.username = username.encode("utf-8") if isinstance(username, str) else username
        self.password = password.encode("utf-8") if isinstance(password, str) else password

    def checkPassword(self, password: Union[bytes, str]) -> bool:  # noqa: N802
        import hmac
        if isinstance(password, str):
            password = password.encode("utf-8")
        return hmac.compare_digest(password, self.password)


class Anonymous:
    """The credentials of an anonymous login."""


def proof(key: bytes, challenge: bytes) -> bytes:
    """The client's answer in a salted login: ``HMAC-SHA256(key, challenge)``."""
    import hashlib
    import hmac
    return hmac.new(key, challenge, hashlib.sha256).digest()


class SaltedResponse:
    """The credentials of syncpb's salted login (see :mod:`syncpb.passwords`)."""

    def __init__(self, username: bytes, challenge: bytes, answer: bytes) -> None:
        self.username = username
        self.challenge = challenge
        self.answer = answer

    def check_key(self, key: bytes) -> bool:
        """True when the client derived ``key`` from its password."""
        import hmac
        return hmac.compare_digest(proof(key, self.challenge), self.answer)


#: Twisted's interface names, used in "No checker for ..." messages.
_INTERFACE_NAMES = {
    Anonymous: "twisted.cred.credentials.IAnonymous",
    ChallengeResponse: "twisted.cred.credentials.IUsernameHashedPassword",
    UsernamePassword: "twisted.cred.credentials.IUsernamePassword",
    SaltedResponse: "syncpb salted login",
    UnixPeer: "syncpb unix peer credentials",
    ClientCertificate: "syncpb TLS client certificate",
}


class InMemoryPasswordChecker:
    """Users and passwords held in memory (tests and demos).

    ``InMemoryPasswordChecker(alice="secret")`` or with a dict of
    ``{username: password}`` (str or bytes).
    """

    credentialInterfaces = (ChallengeResponse, UsernamePassword)  # noqa: N815 - Twisted's name

    def __init__(self, users: Optional[Dict[Any, Any]] = None, **more: Any) -> None:
        self._passwords: Dict[bytes, bytes] = {}
        for name, password in {**(users or {}), **more}.items():
            self.add_user(name, password)

    def add_user(self, username: Union[bytes, str], password: Union[bytes, str]) -> None:
        """Add or replace a user."""
        key = username.encode("utf-8") if isinstance(username, str) else username
        self._passwords[key] = password.encode("utf-8") if isinstance(password, str) else password

    def requestAvatarId(self, credentials: Any) -> bytes:  # noqa: N802 - Twisted's name
        """The avatar id (the username) if the password matches.

        Raises:
            UnauthorizedLogin: unknown user or wrong password (the same error).
        """
        username: bytes = credentials.username
        password = self._passwords.get(username)
        if password is not None and credentials.checkPassword(password):
            return username
        raise UnauthorizedLogin()


class AllowAnonymousAccess:
    """Lets anonymous logins in, with the avatar id :attr:`avatar_id`."""

    credentialInterfaces = (Anonymous,)  # noqa: N815

    def __init__(self, avatar_id: Any = None) -> None:
        self.avatar_id = avatar_id

    def requestAvatarId(self, credentials: Any) -> Any:  # noqa: N802
        return self.avatar_id


class Portal(Root):
    """Checks credentials and asks the realm for avatars.

    Args:
        realm: has ``requestAvatar(avatarId, mind, *interfaces)``.
        checkers: objects with ``credentialInterfaces`` and
            ``requestAvatarId(credentials)``.
        max_failed_logins: refused username/password logins a connection
            may make; its next attempt closes it (None: no limit, as in
            Twisted). Every refusal is logged with the peer's address.

    Give it to :class:`~syncpb.Server` as the root: every connection then
    sees only the login object.
    """

    def __init__(self, realm: Any, checkers: Iterable[Any] = (),
                 max_failed_logins: Optional[int] = 5) -> None:
        self.realm = realm
        self.checkers = list(checkers)
        self.max_failed_logins = max_failed_logins

    def registerChecker(self, checker: Any) -> None:  # noqa: N802 - Twisted's name
        """Add a checker."""
        self.checkers.append(checker)

    def rootObject(self, broker: Any) -> Referenceable:  # noqa: N802
        return LoginRoot(self, broker)

    def login_by_connection(self, peer_info: Any, mind: Any, *interfaces: Any) -> Deferred:
        """An anonymous login: what the connection proves (a TLS client
        certificate, then unix peer credentials) goes to the first checker
        that handles it; with none, plain ``Anonymous`` credentials do."""
        for credentials in credentials_of(peer_info):
            if self._checker_for(credentials) is not None:
                return self.login(credentials, mind, *interfaces)
        return self.login(Anonymous(), mind, *interfaces)

    def _checker_for(self, credentials: Any) -> Any:
        for checker in self.checkers:
            if isinstance(credentials, tuple(checker.credentialInterfaces)):
                return checker
        return None

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Deferred:
        """A Deferred of ``(interface, avatar, logout)``; fails with
        UnauthorizedLogin or UnhandledCredentials."""
        checker = self._checker_for(credentials)
        if checker is not None:
            d = maybe_deferred(checker.requestAvatarId, credentials)
            return d.addCallback(self._request_avatar, mind, interfaces)
        name = _INTERFACE_NAMES.get(type(credentials), type(credentials).__qualname__)
        return maybe_deferred(_raise, UnhandledCredentials(
            f"No checker for {name}{self._unhandled_hint(type(credentials))}"))

    def _unhandled_hint(self, kind: type) -> str:
        """What a client whose ``kind`` of credentials no checker handles
        should do instead, when another login would work; else "".

        It follows Twisted's "No checker for <interface>", which thus stays
        as it is whenever Twisted itself would send it."""
        if kind is ChallengeResponse and any(hasattr(c, "salt_for") for c in self.checkers):
            return ("; this server's password checker keeps salted hashes, so PB's MD5 "
                    "login cannot be checked against it: log in with syncpb's salted login, "
                    "conn.login(user, password, salted=True)")
        if kind is SaltedResponse and any(ChallengeResponse in tuple(c.credentialInterfaces)
                                          for c in self.checkers):
            return ("; this server's checker uses PB's own password login: call "
                    "conn.login(user, password) without salted=True")
        return ""

    def _request_avatar(self, avatar_id: Any, mind: Any, interfaces: Sequence[Any]) -> Deferred:
        d = maybe_deferred(self.realm.requestAvatar, avatar_id, mind, *interfaces)
        return d.addCallback(_normalise_avatar, interfaces)


def _raise(exc: BaseException) -> None:
    raise exc


def _normalise_avatar(result: Any, interfaces: Sequence[Any]) -> Tuple[Any, Any, Callable[[], Any]]:
    """Accept ``(interface, avatar, logout)``, ``(avatar, logout)`` or an avatar."""
    interface = interfaces[0] if interfaces else IPerspective
    if isinstance(result, tuple) and len(result) == 3:
        return result
    if isinstance(result, tuple) and len(result) == 2 and callable(result[1]):
        return interface, result[0], result[1]
    return interface, result, _no_logout


def _no_logout() -> None:
    return None


class _LoggedIn(Referenceable):
    """One login's reference to its avatar: calls run ``perspective_``
    methods; ``logout`` runs once, when released or disconnected."""

    remote_prefix = "perspective_"

    def __init__(self, avatar: Any, logout: Callable[[], Any]) -> None:
        self.avatar = avatar
        self._logout: Optional[Callable[[], Any]] = logout

    @property
    def pb_perspective(self) -> Any:
        return self.avatar

    def remote_method(self, name: str, perspective: Any = None) -> Optional[Callable[..., Any]]:
        if isinstance(self.avatar, Referenceable) and self.avatar.remote_prefix == "perspective_":
            return self.avatar.remote_method(name)
        method = getattr(self.avatar, "perspective_" + name, None)
        return method if isinstance(method, METHOD_TYPES) else None

    def _pb_unexported(self) -> None:
        """The client released the avatar, or the connection ended."""
        logout, self._logout = self._logout, None
        if logout is not None:
            try:
                logout()
            except Exception:
                log.exception("error in a realm's logout")


class _Challenger(Referenceable):
    """Answers one ``respond``: the login's second step (single use)."""

    def __init__(self, root: "LoginRoot", username: bytes, challenge: bytes,
                 credentials: type = ChallengeResponse) -> None:
        self.root = root
        self.username = username
        self.challenge: Optional[bytes] = challenge
        self.credentials = credentials

    def remote_respond(self, response: Any, mind: Any) -> Deferred:
        challenge, self.challenge = self.challenge, None
        if challenge is None or type(response) is not bytes:
            d = maybe_deferred(_raise, UnauthorizedLogin())
        else:
            credentials = self.credentials(self.username, challenge, response)
            d = self.root.portal.login(credentials, mind, IPerspective)
        return self.root.logged_in(d, self.username)


class LoginRoot(Referenceable):
    """What a portal publishes on each connection: Twisted's two methods."""

    def __init__(self, portal: Portal, broker: Any) -> None:
        self.portal = portal
        self.broker = broker
        self.failures = 0
        self.logins = 0  # successful ones (the server's login_timeout reads it)

    def _attempt(self, username: Any) -> bytes:
        """A new login attempt by ``username``: refused (and the connection
        dropped) once this connection has failed too often."""
        limit = self.portal.max_failed_logins
        if limit is not None and self.failures >= limit:
            self.broker.abort(f"{self.failures} failed logins")
            raise UnauthorizedLogin()
        if isinstance(username, str):
            username = username.encode("utf-8")  # Twisted's checkers would refuse it anyway
        if type(username) is not bytes:
            raise UnauthorizedLogin()
        return username

    def remote_login(self, username: Any) -> Tuple[bytes, _Challenger]:
        username = self._attempt(username)
        challenge = os.urandom(CHALLENGE_BYTES)
        return challenge, _Challenger(self, username, challenge)

    def remote_loginSalted(self, username: Any) -> Tuple[Any, ...]:  # noqa: N802
        """syncpb's salted login (not Twisted's): ``(challenge, salt, n, r,
        p, challenger)``; the challenger's ``respond(proof, mind)`` ends it."""
        username = self._attempt(username)
        salts = [c for c in self.portal.checkers if hasattr(c, "salt_for")]
        if not salts:
            raise UnhandledCredentials(f"No checker for {_INTERFACE_NAMES[SaltedResponse]}"
                                       f"{self.portal._unhandled_hint(SaltedResponse)}")
        salt, n, r, p = salts[0].salt_for(username)
        challenge = os.urandom(CHALLENGE_BYTES)
        return (challenge, salt, n, r, p,
                _Challenger(self, username, challenge, SaltedResponse))

    def remote_loginAnonymous(self, mind: Any) -> Deferred:  # noqa: N802 - the PB method name
        return self.logged_in(
            self.portal.login_by_connection(self.broker.peer_info, mind, IPerspective), None)

    def logged_in(self, d: Deferred, username: Optional[bytes]) -> Deferred:
        """Wrap the avatar of a login; count and log a refusal."""
        def wrap(result: Tuple[Any, Any, Callable[[], Any]]) -> _LoggedIn:
            _, avatar, logout = result
            self.logins += 1
            return _LoggedIn(avatar, logout)

        def refused(failure: Failure) -> Failure:
            if username is not None:
                self.failures += 1
            who = "anonymous" if username is None else repr(username)
            log.warning("login refused for %s from %s: %s", who, self.broker.peer or "?",
                        failure.getErrorMessage() or type(failure.value).__name__)
            return failure

        return d.addCallbacks(wrap, refused)
