"""One module per benchmarked peer.

Each peer module exposes:

* ``serve(host)`` -- start a server bound to ``host`` (always 127.0.0.1),
  print ``ADDR <address>`` on stdout (via :func:`common.announce`), then serve
  until the process is terminated by the driver (SIGTERM to its PID).
* ``run_client(workload, addr, opts)`` -- connect to ``addr``, warm up,
  synchronise with the driver (``READY`` / ``GO``), run the measured phase of
  ``workload`` and return a result dict (see :func:`common.result`).

``PEERS`` maps the peer name used on the command line to its module name.
"""

PEERS = {
    "syncpb": "peers.syncpb_peer",
    "twisted": "peers.twisted_peer",
    "pyro5": "peers.pyro5_peer",
    "raw": "peers.raw_peer",
}
