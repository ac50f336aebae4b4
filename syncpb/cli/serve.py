"""``syncpb serve MODULE:OBJECT --listen ADDR ...``: serve an object.

Theory
------
Everything that can be wrong with the command line is found before any
socket is served: the object is imported and classified (root, portal,
realm, or a factory of one of them), the addresses parsed, the TLS files
loaded once. Then one process serves (:func:`serve_once`, in the main
thread, where :meth:`syncpb.Server.serve_forever` turns SIGTERM/SIGINT into
a graceful stop and SIGHUP into a TLS reload), or, with ``--workers N``,
:mod:`syncpb.cli.workers` forks N processes that each run
:func:`serve_once` on the same TCP ports (``SO_REUSEPORT``).

Addresses are those of :func:`syncpb.connect` plus ``fd://N`` and
``tls+fd://N``: a listening socket inherited as descriptor N (systemd
socket activation passes them from 3 up, with ``LISTEN_FDS`` and
``LISTEN_PID`` saying how many and for whom).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional

import syncpb
from syncpb.transport import Address, parse_address

from .common import (EXIT_BAD_ADDRESS, EXIT_FILE, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE,
                     EXIT_USAGE, CliError, add_tls_options, setup_logging, tls_failure)

__all__ = ["Plan", "Target", "add_parser", "run", "serve_once"]

log = logging.getLogger("syncpb.serve")

SD_LISTEN_FDS_START = 3  # systemd's first passed descriptor


@dataclass
class Plan:
    """One listener to serve: an address to bind, or an inherited descriptor."""

    text: str
    address: Optional[Address] = None
    fd: Optional[int] = None
    tls: bool = False

    @property
    def is_unix(self) -> bool:
        return self.address is not None and self.address.is_unix


@dataclass
class Target:
    """What the command line asks for, checked; shared by every worker."""

    spec: str
    root: Any
    plans: List[Plan] = field(default_factory=list)
    tls_options: Any = None  # argparse namespace with the --tls-* options
    stop_timeout: float = 10.0
    tune_malloc: bool = True  # syncpb.tune_malloc() in each serving process


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``serve`` command."""
    serve = commands.add_parser(
        "serve", help="serve an object (root, portal or realm) over PB",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import OBJECT from MODULE and serve it on every --listen address.\n"
                    "OBJECT is a root object (a syncpb.Root), a syncpb.Portal (clients log "
                    "in), a realm\n(has requestAvatar; served behind a Portal checking the "
                    "--users file), or a\ncallable (a class or factory) that returns one.",
        epilog="ADDR: tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH, tls+unix:///PATH,\n"
               "fd://N or tls+fd://N (a listening socket inherited as descriptor N; with\n"
               "systemd socket activation and no --listen, every passed socket is served).\n\n"
               "SIGTERM or SIGINT stops gracefully (calls in flight get --stop-timeout s);\n"
               "SIGHUP reloads the TLS certificate and key.\n\n"
               "exit codes: 0 stopped, 2 usage, 4 bad address, 5 cannot listen,\n"
               "7 module or object not found, 9 TLS files, 10 users file")
    serve.add_argument("spec", metavar="MODULE:OBJECT",
                       help="what to serve, e.g. myapp.server:Calculator")
    serve.add_argument("--listen", action="append", default=[], metavar="ADDR",
                       help="an address to listen on (repeatable)")
    serve.add_argument("--users", metavar="FILE",
                       help="the password file (syncpb users add) a portal or realm checks "
                            "logins against; clients log in with salted=True")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="serve from N processes sharing the TCP ports (SO_REUSEPORT, "
                            "Linux); default 1")
    serve.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long in-flight calls may run after SIGTERM (default 10)")
    serve.add_argument("--no-tune-malloc", dest="tune_malloc", action="store_false",
                       help="keep glibc's heap thresholds (by default they are raised, "
                            "so large messages do not cost page faults: syncpb.tune_malloc)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"],
                       help="what to log on stderr (default: info)")
    add_tls_options(serve, server=True)
    serve.set_defaults(func=run)


# -- what to serve -----------------------------------------------------------------

def _import(spec: str) -> Any:
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise CliError(EXIT_USAGE, f"{spec!r} is not MODULE:OBJECT (e.g. myapp.server:root)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the current directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(EXIT_NOT_FOUND, f"no module named {exc.name!r} (looked in the "
                                           f"current directory and sys.path)") from None
        raise  # the module exists but imports something missing: show the traceback
    value: Any = module
    for part in name.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError(EXIT_NOT_FOUND, f"module {module_name!r} has no {name!r}") from None
    return value


def _servable(value: Any, spec: str, users: Optional[str], called: bool = False) -> Any:
    """The root to serve for ``value``: a root, a portal (with the users
    file as a checker), a realm (behind a new portal), or a factory's result."""
    checker = None
    if users is not None:
        try:
            checker = syncpb.FilePasswordChecker(users)
        except OSError as exc:
            raise CliError(EXIT_FILE, f"cannot read the users file: {exc}") from None
        except ValueError as exc:
            raise CliError(EXIT_FILE, f"bad users file: {exc}") from None
    if isinstance(value, syncpb.Portal):
        if checker is not None:
            value.registerChecker(checker)
        return value
    if isinstance(value, syncpb.Referenceable):
        if checker is not None:
            raise CliError(EXIT_USAGE, f"{spec} is a root object, which has no logins; "
                                       f"--users needs a Portal or a realm")
        return value
    if hasattr(value, "requestAvatar") and not isinstance(value, type):
        if checker is None:
            raise CliError(EXIT_USAGE, f"{spec} is a realm: give --users FILE (made with "
                                       f"'syncpb users add') or serve a Portal")
        return syncpb.Portal(value, [checker])
    if callable(value) and not called:
        try:
            made = value()
        except TypeError as exc:
            raise CliError(EXIT_USAGE, f"{spec} is callable but cannot be called without "
                                       f"arguments: {exc}") from None
        return _servable(made, spec, users, called=True)
    what = "returned " if called else "is "
    raise CliError(EXIT_NOT_FOUND, f"{spec} {what}{type(value).__name__}, not something to "
                                   f"serve: a Root (or Referenceable), a Portal, a realm, "
                                   f"or a callable returning one")


# -- where to serve it -----------------------------------------------------------------

def _plan(text: str) -> Plan:
    scheme, sep, rest = text.partition("://")
    if sep and scheme in ("fd", "tls+fd"):
        if not rest.isdigit():
            raise CliError(EXIT_BAD_ADDRESS, f"{text!r}: use fd://N with N a descriptor number")
        return Plan(text, fd=int(rest), tls=scheme == "tls+fd")
    try:
        address = parse_address(text)
    except ValueError as exc:
        raise CliError(EXIT_BAD_ADDRESS, str(exc)) from None
    return Plan(text, address=address, tls=address.is_tls)


def _systemd_plans(tls: bool) -> List[Plan]:
    """The sockets systemd passed (``LISTEN_FDS``), if they are ours."""
    count, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not count or not count.isdigit() or pid != str(os.getpid()):
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    scheme = "tls+fd" if tls else "fd"
    return [Plan(f"{scheme}://{fd}", fd=fd, tls=tls)
            for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))]


def _server_tls(options: Any) -> Any:
    if not options.tls_cert or not options.tls_key:
        raise CliError(EXIT_USAGE, "a TLS listener needs --tls-cert FILE and --tls-key FILE")
    if options.require_client_cert and not options.tls_ca:
        raise CliError(EXIT_USAGE, "--require-client-cert needs --tls-ca FILE (the CA that "
                                   "client certificates must chain to)")
    from syncpb.tls import server_context
    try:
        return server_context(options.tls_cert, options.tls_key, options.tls_ca,
                              require_client_cert=options.require_client_cert)
    except (OSError, ValueError) as exc:
        raise tls_failure(exc, "the TLS certificate and key") from None


def prepare(args: argparse.Namespace) -> Target:
    """Check the whole command line; return what to serve.

    Raises:
        CliError: anything wrong, with its exit code.
    """
    plans = [_plan(text) for text in args.listen]
    if not plans:
        plans = _systemd_plans(tls=bool(args.tls_cert))
    if not plans:
        raise CliError(EXIT_USAGE, "nothing to listen on: give --listen ADDR "
                                   "(e.g. --listen tcp://127.0.0.1:8800)")
    if any(plan.tls for plan in plans):
        _server_tls(args)  # fail now, with a clear message, if the files do not load
    elif args.tls_cert or args.tls_key or args.tls_ca:
        raise CliError(EXIT_USAGE, "--tls-* options given but no tls:// or tls+unix:// "
                                   "listener to use them")
    if args.workers < 1:
        raise CliError(EXIT_USAGE, "--workers must be at least 1")
    if args.workers > 1:
        unix = [plan.text for plan in plans if plan.is_unix]
        if unix:
            raise CliError(EXIT_USAGE, f"--workers cannot share a unix socket ({unix[0]}): "
                                       f"only one process can own its path. Serve the unix "
                                       f"listener from a separate 'syncpb serve' without "
                                       f"--workers, or use TCP")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise CliError(EXIT_USAGE, "--workers needs SO_REUSEPORT, which this platform "
                                       "lacks; run one process per port instead")
    root = _servable(_import(args.spec), args.spec, args.users)
    return Target(args.spec, root, plans, args, args.stop_timeout, args.tune_malloc)


# -- serving ---------------------------------------------------------------------------

def _inherited(fd: int) -> socket.socket:
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise CliError(EXIT_BAD_ADDRESS, f"fd://{fd}: no socket there ({exc.strerror})") from None


def serve_once(target: Target, reuse_port: bool = False,
               ready: Optional[Any] = None) -> int:
    """Serve ``target`` in this process until SIGTERM/SIGINT; return the exit code.

    Args:
        reuse_port: listen with ``SO_REUSEPORT`` (a worker of several).
        ready: called once every listener is bound.
    """
    tls = _server_tls(target.tls_options) if any(p.tls for p in target.plans) else None
    if target.tune_malloc and syncpb.tune_malloc():
        log.debug("glibc heap thresholds raised (syncpb.tune_malloc)")
    server = syncpb.Server(target.root, stop_timeout=target.stop_timeout)
    try:
        for plan in target.plans:
            if plan.fd is not None:
                try:
                    bound = server.adopt(_inherited(plan.fd), tls=tls if plan.tls else None)
                except ValueError as exc:
                    raise CliError(EXIT_BAD_ADDRESS, f"{plan.text}: {exc}") from None
            else:
                assert plan.address is not None
                try:
                    bound = server.listen(plan.address, tls=tls if plan.tls else None,
                                          reuse_port=reuse_port and not plan.is_unix)
                except (syncpb.ConnectionFailed, OSError) as exc:
                    raise CliError(EXIT_UNREACHABLE, str(exc)) from None
            log.info("listening on %s", bound)
    except BaseException:
        server.stop(0)
        raise
    log.info("serving %s (pid %d); SIGTERM or Ctrl-C stops%s", target.spec, os.getpid(),
             ", SIGHUP reloads the TLS certificate" if tls is not None else "")
    if ready is not None:
        ready()
    server.serve_forever()
    log.info("stopped")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """``syncpb serve``: check everything, then serve (or supervise workers)."""
    setup_logging(args.log_level)
    target = prepare(args)
    if args.workers > 1:
        from .workers import Supervisor
        return Supervisor(target, args.workers).run()
    return serve_once(target)
