"""What every ``syncpb`` command shares: exit codes, the error that carries
one, logging set-up and the TLS options.

Every user error ends the program with a message on stderr and an exit code
of its own, so that scripts can tell a typo from an unreachable server:

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     the remote method raised (its type and message are on stderr), or a
      command refused to act (``tls init`` over existing files)
2     bad usage (unknown option, missing argument)
3     an argument is not valid JSON (or not a valid tagged value)
4     an address cannot be parsed
5     the server cannot be reached (or, for ``serve``, an address cannot be
      listened on)
6     the login was refused
7     the module or object to serve cannot be found
8     the command did not finish within ``--timeout``
9     a TLS problem: certificate or key files that do not load, or a peer
      whose certificate does not verify
10    a file cannot be read or written (users file, password file)
====  =====================================================================
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Optional

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_BAD_JSON", "EXIT_BAD_ADDRESS",
           "EXIT_UNREACHABLE", "EXIT_LOGIN", "EXIT_NOT_FOUND", "EXIT_TIMEOUT", "EXIT_TLS",
           "EXIT_FILE", "CliError", "PROG", "add_tls_options", "describe", "error", "setup_logging",
           "tls_failure"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_JSON = 3
EXIT_BAD_ADDRESS = 4
EXIT_UNREACHABLE = 5
EXIT_LOGIN = 6
EXIT_NOT_FOUND = 7
EXIT_TIMEOUT = 8
EXIT_TLS = 9
EXIT_FILE = 10

PROG = "syncpb"


class CliError(Exception):
    """A user error: ``message`` goes to stderr and ``code`` is the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error(message: str) -> None:
    """Print ``message`` on stderr, prefixed with the program name."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, one line per record with time and process."""
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")


def add_tls_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """The ``--tls-*`` options of ``serve`` (``server``) or ``call``."""
    group = parser.add_argument_group("TLS (for tls:// and tls+unix:// addresses)")
    group.add_argument("--tls-cert", metavar="FILE",
                       help="this side's certificate (PEM, leaf first)"
                       + ("" if server else "; presented when the server asks"))
    group.add_argument("--tls-key", metavar="FILE", help="its private key (PEM, unencrypted)")
    group.add_argument("--tls-ca", metavar="FILE",
                       help="the CA that client certificates must chain to" if server
                       else "the CA the server's certificate must chain to "
                            "(default: the system's)")
    if server:
        group.add_argument("--require-client-cert", action="store_true",
                           help="refuse clients that present no certificate (needs --tls-ca)")
    else:
        group.add_argument("--tls-host", metavar="NAME",
                           help="the name the server's certificate must carry (default: the "
                                "address's host; needed for tls+unix://)")


def tls_failure(exc: BaseException, what: str) -> CliError:
    """A :class:`CliError` for certificate or key files that would not load."""
    if isinstance(exc, OSError):
        return CliError(EXIT_TLS, f"cannot read {what}: {exc.strerror or exc} "
                                  f"({getattr(exc, 'filename', '') or 'file'})")
    return CliError(EXIT_TLS, f"{what} do not load: {exc}")


def describe(value: Any, limit: Optional[int] = 200) -> str:
    """``repr(value)``, shortened to ``limit`` characters."""
    text = repr(value)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
