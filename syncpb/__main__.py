"""``python -m syncpb``: syncpb's command line.

Theory
------
One :mod:`argparse` parser with a tree of subcommands (``tls init`` for
now); every leaf stores its handler in ``func`` and returns an exit code,
so a new subcommand is a parser plus a function. :func:`main` never exits
the interpreter itself -- argparse's own exits (``--help``, ``--version``,
usage errors) are turned into return codes -- so it can be called from
tests and other programs. Exit codes: 0 success, 1 refused or failed
(for instance files that would be overwritten), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from cryptography import x509

import syncpb
from syncpb.tls import certs

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

PROG = "python -m syncpb"

Handler = Callable[[argparse.Namespace], int]


def _error(message: str) -> None:
    """Print ``message`` on stderr, prefixed with the program name."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


# -- argument types --------------------------------------------------------------

def _host(text: str) -> str:
    """An argparse type: ``text`` if it is a valid host name or IP address.

    Raises:
        argparse.ArgumentTypeError: it is not.
    """
    try:
        certs.check_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common_name(text: str) -> str:
    """An argparse type: ``text`` if it can be a certificate's common name.

    Raises:
        argparse.ArgumentTypeError: it cannot.
    """
    try:
        return certs.check_common_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- tls init ------------------------------------------------------------------

def _describe_certificate(path: Path) -> List[str]:
    """Subject, SANs, expiry and SHA-256 fingerprint of the PEM at ``path``."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    fingerprint = certs.fingerprint_sha256(cert).upper()
    names = certs.subject_alt_names(cert)
    lines = [f"  subject:     {cert.subject.rfc4514_string()}"]
    if names:
        lines.append(f"  names:       {', '.join(names)}")
    lines.append(f"  not after:   {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    lines.append("  sha256:      " + ":".join(fingerprint[i:i + 2]
                                              for i in range(0, len(fingerprint), 2)))
    return lines


def _report(written: Dict[str, Path]) -> None:
    """Print every file written, its mode and, for certificates, what it says."""
    for name, path in written.items():
        mode = stat.S_IMODE(os.stat(path).st_mode)
        print(f"wrote {path} (mode {mode:04o})")
        if name.endswith(".pem"):
            print("\n".join(_describe_certificate(path)))


def _occupied(directory: Path) -> List[str]:
    """The names of the entries in ``directory`` (none if it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(directory))


def _tls_init(args: argparse.Namespace) -> int:
    """Write a development CA, server and client set into ``args.directory``."""
    directory = Path(args.directory)
    present = _occupied(directory)
    if present and not args.force:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        _error(f"{directory} already holds files ({shown}); refusing to write there "
               f"without --force")
        return EXIT_FAILED
    try:
        written = certs.write_dev_set(directory, args.hosts, client_name=args.client_name,
                                      force=args.force)
    except (OSError, ValueError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    _report(written)
    return EXIT_OK


def _add_tls(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``tls`` command and its subcommands."""
    tls = commands.add_parser("tls", help="TLS certificates",
                              description="Manage TLS certificates for syncpb.")
    sub = tls.add_subparsers(dest="tls_command", metavar="SUBCOMMAND", required=True)
    init = sub.add_parser(
        "init", help="write a development CA, server and client certificate",
        description="Write a development set into DIR: ca.pem/ca.key, server.pem/server.key "
                    "(for every --host) and client.pem/client.key. Keys get mode 0600.")
    init.add_argument("directory", metavar="DIR", help="directory to write (created if missing)")
    init.add_argument("--host", dest="hosts", action="append", required=True, type=_host,
                      metavar="NAME",
                      help="a DNS name or IP address the server is reached at (repeatable)")
    init.add_argument("--client-name", default="client", type=_common_name, metavar="NAME",
                      help="the client certificate's common name, the user it logs in as "
                           "(default: client)")
    init.add_argument("--force", action="store_true",
                      help="write even if DIR already holds files (overwrites the set)")
    init.set_defaults(func=_tls_init)


# -- the program -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m syncpb`` and all its subcommands."""
    parser = argparse.ArgumentParser(prog=PROG, description="syncpb command line tools.")
    parser.add_argument("--version", action="version", version=f"syncpb {syncpb.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_tls(commands)
    return parser


def _exit_code(code: object) -> int:
    """The exit code a :class:`SystemExit` from argparse carries."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_FAILED


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: the arguments, without the program name.

    Returns:
        The exit code: 0 success, 1 refused or failed, 2 bad usage.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error
        return _exit_code(exit_.code)
    handler: Handler = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
