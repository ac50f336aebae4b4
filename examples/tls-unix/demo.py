"""The tls-unix demo: certificates, a TLS server on a unix socket, logins by certificate.

    python examples/tls-unix/demo.py

Makes a development certificate set in a temporary directory (what
``python -m syncpb tls init DIR --host pb.internal --client-name alice``
writes), serves the notes service there in a background thread, logs in
as alice, shows two refused clients and the socket's mode, then stops.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client module)
import server as notes  # noqa: E402  (and its server module)
from syncpb import tls  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written = tls.write_dev_set(tmp, ["pb.internal"], client_name="alice")
        print("certificates:", " ".join(written))
        server = notes.make_server()
        try:
            address = notes.listen(server, tmp)
            server.start()
            print(f"notes server at {address.replace(tmp, 'DIR')} (DIR: a temporary directory)")
            mode = stat.S_IMODE(os.stat(os.path.join(tmp, notes.SOCKET)).st_mode)
            print(f"socket {notes.SOCKET}: mode {mode:04o}")
            client.main(address, tmp)
            client.refusals(address, tmp)
        finally:
            server.stop()
        print("server saw:\n" + "".join(f"  {line}\n" for line in server.root.realm.seen), end="")
        print("socket removed:", not os.path.exists(os.path.join(tmp, notes.SOCKET)))
        print("server stopped")


if __name__ == "__main__":
    main()
