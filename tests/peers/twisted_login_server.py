"""A real Twisted PB server behind a Portal, for syncpb's login interop tests.

Usage::

    python twisted_login_server.py [--anonymous]

Serves ``pb.PBServerFactory(portal)`` on 127.0.0.1 (ephemeral port), prints
``PORT <number>``, stops at stdin EOF. Users (InMemoryUsernamePasswordDatabaseDontUse):
alice/wonderland, bob/builder; ``--anonymous`` adds AllowAnonymousAccess.
Avatars (``interop_types``-style) have:

    hello(text) -> '<text>, <name>!'
    notifyMind() -> mind.callRemote('notify', 'news for <name>')
    getThing() -> a Board (pb.Viewable): whoami() is the avatar's name
    logouts() -> names logged out so far (the realm's logout callables)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.cred import checkers, portal  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.spread import pb  # noqa: E402
from zope.interface import implementer  # noqa: E402

import interop_types  # noqa: E402
import twisted_server  # noqa: E402  (stop_on_stdin_eof)

LOGOUTS = []


class User(pb.Avatar):
    def __init__(self, name, mind, board):
        self.name, self.mind, self.board = name, mind, board

    def perspective_hello(self, text):
        return f"{text}, {self.name}!"

    def perspective_notifyMind(self):
        return self.mind.callRemote("notify", f"news for {self.name}")

    def perspective_getThing(self):
        return self.board

    def perspective_logouts(self):
        return list(LOGOUTS)


@implementer(portal.IRealm)
class Realm:
    def __init__(self):
        self.board = interop_types.Board()

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        name = "anonymous" if avatar_id is checkers.ANONYMOUS else avatar_id.decode()
        return pb.IPerspective, User(name, mind, self.board), lambda: LOGOUTS.append(name)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--anonymous", action="store_true")
    options = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    the_portal = portal.Portal(Realm(), [checkers.InMemoryUsernamePasswordDatabaseDontUse(
        alice=b"wonderland", bob=b"builder")])
    if options.anonymous:
        the_portal.registerChecker(checkers.AllowAnonymousAccess())
    port = reactor.listenTCP(0, pb.PBServerFactory(the_portal), interface="127.0.0.1")

    def announce():
        sys.stdout.write(f"PORT {port.getHost().port}\n")
        sys.stdout.flush()
        twisted_server.stop_on_stdin_eof()

    reactor.callWhenRunning(announce)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
