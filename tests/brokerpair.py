"""Helpers for tests of the sans-IO broker: an in-memory pair, running calls."""

from __future__ import annotations

from typing import Any, Iterable, Tuple

from syncpb.broker import Broker, CallReceived


def connected_pair(root: Any, client_security: Any = None,
                   **server_kwargs: Any) -> Tuple[Broker, Broker]:
    """A server broker publishing ``root`` and a client broker, past the handshake."""
    server = Broker(root=root, **server_kwargs)
    client = Broker(is_client=True, security=client_security)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return server, client


def run_calls(broker: Broker, events: Iterable[Any]) -> None:
    """Run every CallReceived event and queue its answer or failure."""
    for event in events:
        if isinstance(event, CallReceived):
            if not event.answer_required:
                event.method(*event.args, **event.kwargs)
                continue
            try:
                result = event.method(*event.args, **event.kwargs)
            except Exception as exc:
                broker.fail(event.request_id, exc, event.perspective)
            else:
                broker.answer(event.request_id, result, event.perspective)
