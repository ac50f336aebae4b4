"""A real Twisted PB client that logs into a (syncpb) server and reports JSON.

Usage::

    python twisted_login_client.py HOST PORT

Logs in as alice with a wrong password (expects UnauthorizedLogin), as an
unknown user (same error), then as alice/wonderland with a mind, calls
hello/notifyMind/getThing().whoami('?'), and anonymously; prints one JSON object
``{name: value-or-error}`` and exits.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.cred.credentials import Anonymous, UsernamePassword  # noqa: E402
from twisted.internet import defer, reactor  # noqa: E402
from twisted.spread import pb  # noqa: E402


class Mind(pb.Referenceable):
    def remote_notify(self, text):
        return f"got {text}"


def outcome(d):
    """(value) or {'error': type name} for a Deferred's result."""
    def failed(failure):
        kind = failure.type  # a CopiedFailure names its type (bytes or str)
        if isinstance(kind, bytes):
            kind = kind.decode()
        if not isinstance(kind, str):
            kind = f"{kind.__module__}.{kind.__name__}"
        return {"error": kind}
    return d.addErrback(failed)


@defer.inlineCallbacks
def scenario(host, port):
    report = {}
    for label, user, password in (("wrong", b"alice", b"nope"), ("unknown", b"mallory", b"x")):
        factory = pb.PBClientFactory()
        reactor.connectTCP(host, port, factory)
        report[label] = yield outcome(factory.login(UsernamePassword(user, password)))
        factory.disconnect()
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory)
    alice = yield factory.login(UsernamePassword(b"alice", b"wonderland"), client=Mind())
    report["hello"] = yield alice.callRemote("hello", "Hi")
    report["mind"] = yield alice.callRemote("notifyMind")
    thing = yield alice.callRemote("getThing")
    report["whoami"] = yield thing.callRemote("whoami", "?")
    factory.disconnect()
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory)
    anon = yield outcome(factory.login(Anonymous()))
    report["anonymous"] = (yield anon.callRemote("hello", "Hey")) if not isinstance(
        anon, dict) else anon
    factory.disconnect()
    return report


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    result = {}

    def done(report):
        result.update(report)

    def crashed(failure):
        result["crashed"] = failure.getTraceback()

    d = scenario(host, port).addCallbacks(done, crashed)
    d.addBoth(lambda _: reactor.stop())
    reactor.callLater(30, lambda: reactor.running and reactor.stop())
    reactor.run()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
