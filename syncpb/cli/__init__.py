"""syncpb's command line: ``syncpb`` (a console script) or ``python -m syncpb``.

=====================  ==================================================
``syncpb serve``       serve an object: root, portal, realm or factory
                       (:mod:`syncpb.cli.serve`, ``--workers``:
                       :mod:`syncpb.cli.workers`)
``syncpb call``        one remote call from a shell, JSON in and out
                       (:mod:`syncpb.cli.call`, :mod:`syncpb.cli.tagged`)
``syncpb users add``   a user in a ``--users`` password file
``syncpb tls init``    a development CA, server and client certificate
=====================  ==================================================

Why argparse rather than click: it is in the standard library (a library's
convenience command should not add a dependency to every install), and its
subcommands, typed options, generated ``--help`` and usage errors cover
everything here. :func:`main` never exits the interpreter itself, so tests
and other programs can call it; :func:`run` is the console script. Exit
codes are listed in :mod:`syncpb.cli.common`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

import syncpb

from . import admin, call, serve
from .common import EXIT_FAILED, EXIT_OK, PROG, CliError, error

__all__ = ["build_parser", "main", "run"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``syncpb`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve and call Perspective Broker objects.",
        epilog="'syncpb COMMAND --help' tells more about each command.")
    parser.add_argument("--version", action="version", version=f"syncpb {syncpb.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(commands)
    call.add_parser(commands)
    admin.add_parsers(commands)
    return parser


def _exit_code(code: object) -> int:
    """The exit code a :class:`SystemExit` from argparse carries."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_FAILED


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error
        return _exit_code(exit_.code)
    handler: Handler = args.func
    try:
        return handler(args)
    except CliError as exc:
        error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        error("interrupted")
        return 130


def run() -> None:
    """The ``syncpb`` console script."""
    sys.exit(main())
