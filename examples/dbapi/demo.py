"""The dbapi demo: a store on a fresh SQLite file, the client, everything stopped.

    python examples/dbapi/demo.py

The server runs in this process (in a background thread), so the demo can
hand it a database file in a temporary directory and close it all itself.
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client module)
import server as kv  # noqa: E402  (and its server module)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = kv.make_server(os.path.join(tmp, "kv.sqlite3"))
        try:
            address = server.listen("tcp://127.0.0.1:0")
            server.start()
            print(f"key-value server at {address}, database kv.sqlite3 in a temporary directory")
            client.main(address)
        finally:
            server.stop()  # stops its own thread pool too
            server.root.db.close()  # and the database connections
        print("server stopped")


if __name__ == "__main__":
    main()
