"""Structural guards for the per-call hot paths (no timing here: see benchmarks/).

CPython 3.11 specialises instance-attribute reads on objects whose
``__dict__`` keys are shared with their class's other instances; past 30
keys the dict stops sharing and every ``self.x`` on the hot path takes a
slower lookup (measured: +4k instructions per W1 call on the client when
the Broker grew to 36 attributes). The broker uses ``__slots__``; the
sessions must stay under the limit.
"""

from __future__ import annotations

import syncpb

SHARED_KEYS_LIMIT = 30


class Root(syncpb.Root):
    def remote_sizes(self):
        return None


def test_broker_has_no_instance_dict(server_factory, connect):
    _, address = server_factory(Root())
    conn = connect(address)
    assert not hasattr(conn.broker, "__dict__")


def test_sessions_stay_within_shared_key_dicts(server_factory, connect):
    server, address = server_factory(Root())
    conn = connect(address)
    conn.root.sizes()
    assert len(vars(conn._session)) <= SHARED_KEYS_LIMIT
    (green,) = server._sessions
    assert len(vars(green)) <= SHARED_KEYS_LIMIT


# ---------------------------------------------------------------- the inline answer paths

PLAIN_ANSWERS = [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, -1, -128, 2 ** 70,
                 True, False, None, 0.0, -2.5, float("inf")]


def _ready_pair():
    from syncpb.broker import Broker
    server, client = Broker(root=Root()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.ready and server.ready and not server.has_output and not client.has_output
    return client, server


def test_plain_answers_encode_as_the_general_path_does():
    client, server = _ready_pair()
    for request_id, value in enumerate(PLAIN_ANSWERS, start=1):
        server.answer(request_id, value)
        fast = server.data_to_send()
        general = (server._answer_head + server._writer.int_token(request_id)
                   + b"".join(server._encode_parts((value,))))
        assert fast == general, value


def test_plain_answers_decode_to_equal_values_of_the_same_type():
    from syncpb.broker import AnswerReceived
    client, server = _ready_pair()
    for value in PLAIN_ANSWERS:
        request_id = client.call(b"root", "sizes")
        client.data_to_send()
        server.answer(request_id, value)
        (event,) = client.receive_data(server.data_to_send())
        assert type(event) is AnswerReceived and event.request_id == request_id
        assert event.value == value and type(event.value) is type(value)
    assert client.waiting_count == 0


def test_hotpath_benchmark_script_runs(tmp_path):
    import pathlib
    import subprocess
    import sys
    script = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "hotpath.py"
    done = subprocess.run([sys.executable, str(script), "--calls", "200", "--rounds", "1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[0:2] for line in done.stdout.splitlines()[1:]]
    assert [" ".join(row) for row in rows] == ["broker client", "broker server",
                                              "session client", "session server"]


def test_w1_budget_script_runs_with_the_broker_only_and_thin_kinds(tmp_path):
    import pathlib
    import subprocess
    import sys
    script = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "w1_budget.py"
    done = subprocess.run([sys.executable, str(script), "--calls", "200", "--rounds", "1", "--bare",
                           "--thin"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in done.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| server"))}
    assert list(rows) == ["syncpb", "bare-client", "bare", "thin", "raw", "raw-threads"]
    assert all(float(cells[0].replace(",", "")) > 0 for cells in rows.values())
    ratios = [line.split(":")[0] for line in done.stdout.splitlines() if " / raw" in line]
    assert {"bare / raw", "thin / raw", "syncpb / raw"} <= set(ratios)


def test_shared_values_benchmark_script_runs(tmp_path):
    import pathlib
    import subprocess
    import sys
    script = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "shared_values.py"
    done = subprocess.run([sys.executable, str(script), "--count", "200", "--runs", "1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in done.stdout.splitlines() if line.startswith("| ") and "shape" not in line]
    shapes = ["plain records", "indexed records", "indexed, blob between", "tuple chain"]
    assert sorted({row[0] for row in rows}) == sorted(shapes)
    codecs = {row[1] for row in rows}
    assert codecs <= {"pure", "compiled"} and "pure" in codecs
    assert all(float(row[2].replace(",", "")) > 0 and row[3].endswith("x") for row in rows)
    refused = subprocess.run([sys.executable, str(script), "--count", "0"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 2 and "--count: must be at least 1, not 0" in refused.stderr
