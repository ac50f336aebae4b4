"""``syncpb call ADDR METHOD [ARG ...]``: one remote call from a shell.

Arguments are JSON texts, the result is printed as JSON; values JSON lacks
travel in the tagged form of :mod:`syncpb.cli.tagged`. With ``--login`` the
call goes to the avatar (its ``perspective_`` method) after a login:
salted first (the ``--users`` file of ``syncpb serve``), then Twisted's MD5
challenge-response when the server has no checker for the salted form.
``--timeout`` bounds the whole command: connecting, logging in, calling.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any, List, Optional

import syncpb
from syncpb import errors
from syncpb.transport import Address, parse_address

from . import tagged
from .common import (EXIT_BAD_ADDRESS, EXIT_BAD_JSON, EXIT_FAILED, EXIT_FILE, EXIT_LOGIN,
                     EXIT_OK, EXIT_TIMEOUT, EXIT_TLS, EXIT_UNREACHABLE, CliError,
                     add_tls_options, tls_failure)

__all__ = ["add_parser", "run"]


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``call`` command."""
    call = commands.add_parser(
        "call", help="call a remote method and print its result as JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Connect to ADDR, call METHOD on the root object (or, with --login, on "
                    "your avatar) with the ARGs, print the result as JSON.",
        epilog="ARGs are JSON: 1, 2.5, '\"text\"', '[1, 2]', '{\"a\": 1}', true, null.\n"
               "Values JSON lacks are tagged: {\"$bytes\": \"aGk=\"}, {\"$tuple\": [1, 2]},\n"
               "{\"$set\": [...]}, {\"$decimal\": \"1.10\"}, {\"$datetime\": \"2026-12-06T10:00\"},\n"
               "{\"$date\": ...}, {\"$time\": ...}, {\"$timedelta\": 90}, {\"$float\": \"nan\"},\n"
               "{\"$dict\": [[key, value], ...]}; results may also hold {\"$ref\": ...}\n"
               "(a remote reference) and {\"$copy\": class, \"state\": ...}.\n\n"
               "exit codes: 0 ok, 1 the remote method raised, 2 usage, 3 bad JSON,\n"
               "4 bad address, 5 unreachable, 6 login refused, 8 timed out, 9 TLS, 10 file")
    call.add_argument("address", metavar="ADDR",
                      help="tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH or tls+unix:///PATH")
    call.add_argument("method", metavar="METHOD", help="the method name, without remote_")
    call.add_argument("args", metavar="ARG", nargs="*", help="an argument, as JSON")
    call.add_argument("--login", metavar="USER", help="log in as USER and call the avatar")
    call.add_argument("--password-file", metavar="FILE",
                      help="read the password from FILE's first line (default: ask)")
    call.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                      help="give up after this long, all steps together (default: 30)")
    add_tls_options(call, server=False)
    call.set_defaults(func=run)


def _arguments(texts: List[str]) -> List[Any]:
    values = []
    for number, text in enumerate(texts, 1):
        try:
            values.append(tagged.from_json(json.loads(text)))
        except json.JSONDecodeError as exc:
            hint = (f"; a string needs JSON quotes: '\"{text}\"'"
                    if text and text[0] not in '[{"-0123456789' else "")
            raise CliError(EXIT_BAD_JSON, f"argument {number} ({text!r}) is not JSON: "
                                          f"{exc.msg}{hint}") from None
        except tagged.TaggedError as exc:
            raise CliError(EXIT_BAD_JSON, f"argument {number}: {exc}") from None
    return values


def _password(args: argparse.Namespace) -> str:
    if args.password_file is None:
        return getpass.getpass(f"password for {args.login}: ")
    try:
        with open(args.password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise CliError(EXIT_FILE, f"cannot read the password file: {exc}") from None


def _tls(args: argparse.Namespace, address: Address) -> Any:
    if not address.is_tls:
        if args.tls_ca or args.tls_cert or args.tls_host:
            raise CliError(EXIT_BAD_ADDRESS, f"--tls-* options need a tls:// or tls+unix:// "
                                             f"address, not {address}")
        return None
    if address.is_unix and not args.tls_host:
        raise CliError(EXIT_BAD_ADDRESS, "a tls+unix:// address needs --tls-host NAME: the "
                                         "name the server's certificate carries")
    from syncpb.tls import client_context
    try:
        return client_context(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
                              server_hostname=args.tls_host)
    except (OSError, ValueError) as exc:
        raise tls_failure(exc, "the TLS certificate or key files") from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise syncpb.CallTimeout("no time left")
    return left


def _log_in(conn: syncpb.Connection, user: str, password: str, deadline: float) -> Any:
    try:
        return conn.login(user, password, salted=True, timeout=_left(deadline))
    except (errors.UnhandledCredentials, errors.NoSuchMethod, errors.RemoteError):
        pass  # no salted login there (an in-memory checker, or a Twisted server)
    return conn.login(user, password, timeout=_left(deadline))


def _call(args: argparse.Namespace, values: List[Any], tls: Any, deadline: float) -> Any:
    password = _password(args) if args.login else ""
    with syncpb.connect(args.address, timeout=_left(deadline), tls=tls) as conn:
        target = conn.root
        if args.login:
            try:
                target = _log_in(conn, args.login, password, deadline)
            except errors.LoginFailed as exc:
                raise CliError(EXIT_LOGIN, f"login as {args.login!r} refused: {exc}") from None
        result = target.callRemote(args.method, *values).result(timeout=_left(deadline))
        return tagged.to_json(result)  # while connected: references describe themselves live


def run(args: argparse.Namespace) -> int:
    """Make the call; print the result; return the exit code."""
    values = _arguments(args.args)
    try:
        address = parse_address(args.address)
    except ValueError as exc:
        raise CliError(EXIT_BAD_ADDRESS, str(exc)) from None
    tls = _tls(args, address)
    deadline = time.monotonic() + args.timeout
    try:
        result = _call(args, values, tls, deadline)
    except errors.CallTimeout:
        raise CliError(EXIT_TIMEOUT, f"no answer within --timeout {args.timeout:g} s") from None
    except errors.TLSError as exc:
        raise CliError(EXIT_TLS, f"{type(exc).__name__}: {exc}") from None
    except errors.ConnectionFailed as exc:
        if isinstance(exc.__cause__, TimeoutError) or time.monotonic() >= deadline:
            raise CliError(EXIT_TIMEOUT, f"{exc} (--timeout {args.timeout:g} s)") from None
        raise CliError(EXIT_UNREACHABLE, str(exc)) from None
    except errors.ConnectionLost as exc:
        raise CliError(EXIT_UNREACHABLE, f"connection lost: {exc}") from None
    except CliError:
        raise
    except Exception as exc:  # the remote method raised: name it as the server did
        kind = getattr(exc, "remote_type", None) or (
            f"{type(exc).__module__}.{type(exc).__qualname__}")
        message = getattr(exc, "message", None) or str(exc)
        raise CliError(EXIT_FAILED, f"remote error: {kind}: {message}") from None
    json.dump(result, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK
