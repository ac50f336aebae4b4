"""``syncpb users add`` and ``syncpb tls init``: the files a server needs."""

from __future__ import annotations

import argparse
import getpass
import os
import stat
import sys
from pathlib import Path
from typing import Dict, List

from syncpb.passwords import add_user

from .common import EXIT_FAILED, EXIT_FILE, EXIT_OK, EXIT_USAGE, CliError, error

__all__ = ["add_parsers"]


# -- users add -------------------------------------------------------------------

def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if first and getpass.getpass("again: ") != first:
        raise CliError(EXIT_USAGE, "the two passwords differ; nothing changed")
    return first


def _users_add(args: argparse.Namespace) -> int:
    if not args.name or ":" in args.name or "\n" in args.name:
        raise CliError(EXIT_USAGE, "a user name must be non-empty and contain no ':'")
    password = _read_password(args)
    if not password:
        raise CliError(EXIT_USAGE, "an empty password is not allowed; nothing changed")
    try:
        add_user(args.file, args.name, password)
    except OSError as exc:
        raise CliError(EXIT_FILE, f"cannot write {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(EXIT_FILE, f"{exc}; nothing changed") from None
    print(f"{args.name} added to {args.file}")
    return EXIT_OK


def _add_users(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="manage a password file for --users",
                                description="Manage the salted password file that "
                                            "'syncpb serve --users FILE' checks logins against.")
    sub = users.add_subparsers(dest="users_command", metavar="SUBCOMMAND", required=True)
    add = sub.add_parser("add", help="add a user or change a user's password",
                         description="Add NAME to FILE (created with mode 0600), or replace "
                                     "its password. Servers reading FILE see the change "
                                     "without a restart. Clients log in with "
                                     "conn.login(NAME, password, salted=True).")
    add.add_argument("file", metavar="FILE", help="the password file")
    add.add_argument("name", metavar="NAME", help="the user name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin (default: ask "
                          "twice on the terminal)")
    add.set_defaults(func=_users_add)


# -- tls init --------------------------------------------------------------------

def _host(text: str) -> str:
    from syncpb.tls import certs
    try:
        certs.check_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common_name(text: str) -> str:
    from syncpb.tls import certs
    try:
        return str(certs.check_common_name(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _describe_certificate(path: Path) -> List[str]:
    """Subject, SANs, expiry and SHA-256 fingerprint of the PEM at ``path``."""
    from cryptography import x509
    from syncpb.tls import certs
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
    for name, path in written.items():
        mode = stat.S_IMODE(os.stat(path).st_mode)
        print(f"wrote {path} (mode {mode:04o})")
        if name.endswith(".pem"):
            print("\n".join(_describe_certificate(path)))


def _tls_init(args: argparse.Namespace) -> int:
    """Write a development CA, server and client set into ``args.directory``."""
    from syncpb.tls import certs
    directory = Path(args.directory)
    present = sorted(e.name for e in os.scandir(directory)) if directory.is_dir() else []
    if present and not args.force:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        error(f"{directory} already holds files ({shown}); refusing to write there "
              f"without --force")
        return EXIT_FAILED
    try:
        written = certs.write_dev_set(directory, args.hosts, client_name=args.client_name,
                                      force=args.force)
    except (OSError, ValueError) as exc:
        raise CliError(EXIT_FILE, str(exc)) from None
    _report(written)
    return EXIT_OK


def _add_tls(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``users`` and ``tls`` commands."""
    _add_users(commands)
    _add_tls(commands)
