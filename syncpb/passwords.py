"""A password file of salted scrypt hashes, and its checker (L3.3).

Why PB's own login cannot use it
--------------------------------
PB's challenge-response (``MD5(MD5(password) + challenge)``) can only be
checked by a server that knows the password or its unsalted MD5 digest,
which is as good as the password. A file of salted, deliberately slow
hashes cannot answer it. So :class:`FilePasswordChecker` serves:

* ``conn.login(user, password, salted=True)``: syncpb's salted login. The
  server sends the user's salt and scrypt parameters with a fresh
  challenge; the client derives ``key = scrypt(password, salt)`` and
  answers ``HMAC-SHA256(key, challenge)``; the server compares with the
  stored key. The password never travels, an old answer does not replay,
  and a stolen file does not reveal passwords (salted scrypt), though, as
  with any stored verifier, its keys would let someone log in. Twisted
  clients do not know this method; use :class:`~syncpb.InMemoryPasswordChecker`
  (or another checker that knows the password) for them.
* :class:`~syncpb.portal.UsernamePassword` credentials, for tools that
  check a password directly.

File format: one ``username:scrypt:n:r:p:salt-hex:key-hex`` line per user.
Add users with :func:`add_user` or ``syncpb users add FILE USER``.
"""

from __future__ import annotations

# hashlib and hmac are imported where they are used: hashlib loads OpenSSL's
# libcrypto (about 3.5 MiB of memory) that a server without logins never needs.
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .errors import ProtocolError, UnauthorizedLogin
from .portal import SaltedResponse, UsernamePassword, proof

__all__ = ["FilePasswordChecker", "SaltedResponse", "add_user", "check_params", "derive_key",
           "proof"]

#: scrypt cost parameters for new entries (OWASP's minimum for scrypt).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 17, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16

Params = Tuple[bytes, int, int, int]  # salt, n, r, p


#: The most a client will compute for a server: scrypt needs 128*n*r bytes,
#: so a hostile server cannot make a login take gigabytes or minutes.
MAX_N, MAX_R, MAX_P, MAX_SALT = 2 ** 20, 16, 16, 64


def check_params(salt: object, n: object, r: object, p: object) -> Params:
    """Salt and scrypt parameters as a server sent them, if sane.

    Raises:
        ProtocolError: a wrong type, or a cost no login should need.
    """
    if (type(salt) is not bytes or not 0 < len(salt) <= MAX_SALT
            or not all(type(v) is int for v in (n, r, p))):
        raise ProtocolError("malformed salted-login parameters")
    if not (1 < n <= MAX_N and n & (n - 1) == 0 and 0 < r <= MAX_R  # type: ignore[operator]
            and 0 < p <= MAX_P):  # type: ignore[operator]
        raise ProtocolError(f"refusing scrypt parameters n={n} r={r} p={p}")
    return salt, n, r, p  # type: ignore[return-value]


def derive_key(password: Union[bytes, str], salt: bytes, n: int, r: int, p: int) -> bytes:
    """The stored key: ``scrypt(password, salt, n, r, p)``, 32 bytes."""
    import hashlib
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
                          dklen=KEY_BYTES)


def _read(path: Path) -> Dict[bytes, Tuple[Params, bytes]]:
    users: Dict[bytes, Tuple[Params, bytes]] = {}
    if not path.exists():
        return users
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            name, scheme, n, r, p, salt, key = line.rsplit(":", 6)
            if scheme != "scrypt":
                raise ValueError(f"unknown scheme {scheme!r}")
            params = (bytes.fromhex(salt), int(n), int(r), int(p))
            users[name.encode("utf-8")] = (params, bytes.fromhex(key))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not a password entry ({exc})") from None
    return users


def add_user(path: Union[str, Path], username: str, password: Union[bytes, str], *,
             n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> None:
    """Add or replace ``username`` in the password file (created mode 0600)."""
    if ":" in username or "\n" in username or not username:
        raise ValueError("a username must be non-empty and contain no ':' or newline")
    path = Path(path)
    users = _read(path)
    salt = os.urandom(SALT_BYTES)
    users[username.encode("utf-8")] = ((salt, n, r, p), derive_key(password, salt, n, r, p))
    lines = [f"{name.decode('utf-8')}:scrypt:{pn}:{pr}:{pp}:{ps.hex()}:{key.hex()}"
             for name, ((ps, pn, pr, pp), key) in sorted(users.items())]
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, path)


class FilePasswordChecker:
    """Checks logins against a file of salted scrypt hashes.

    The file is re-read when it changes, so users added with
    :func:`add_user` can log in without a restart.
    """

    credentialInterfaces = (SaltedResponse, UsernamePassword)  # noqa: N815 - Twisted's name

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self._users: Dict[bytes, Tuple[Params, bytes]] = {}
        self._stamp: Optional[Tuple[int, int]] = None
        self._secret = os.urandom(32)  # salts for unknown users: stable, unguessable
        self._load()

    def _load(self) -> Dict[bytes, Tuple[Params, bytes]]:
        try:
            stat = self.path.stat()
            stamp: Optional[Tuple[int, int]] = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._users, self._stamp = _read(self.path), stamp
        return self._users

    def salt_for(self, username: bytes) -> Params:
        """The salt and scrypt parameters a salted login uses for ``username``
        (made-up but stable ones for an unknown user, so the answer does not
        reveal who exists)."""
        import hashlib
        import hmac
        entry = self._load().get(username)
        if entry is not None:
            return entry[0]
        fake = hmac.new(self._secret, username, hashlib.sha256).digest()[:SALT_BYTES]
        return fake, SCRYPT_N, SCRYPT_R, SCRYPT_P

    def requestAvatarId(self, credentials: object) -> bytes:  # noqa: N802 - Twisted's name
        """The username, if the credentials match.

        Raises:
            UnauthorizedLogin: unknown user or wrong password (the same error).
        """
        import hmac
        username = getattr(credentials, "username", b"")
        entry = self._load().get(username)
        if entry is not None:
            (salt, n, r, p), key = entry
            if isinstance(credentials, SaltedResponse) and credentials.check_key(key):
                return username
            if isinstance(credentials, UsernamePassword) and hmac.compare_digest(
                    derive_key(credentials.password, salt, n, r, p), key):
                return username
        raise UnauthorizedLogin()
