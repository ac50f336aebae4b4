"""The reader's and writer's inline paths agree with the general Banana codec.

Small ints, 2- and 3-byte-prefix ints (request ids, counters) and short
strings skip the general token path; at every boundary the bytes must be
the canonical Banana form, decode whole, report Incomplete when cut short
and stop exactly at the token's end when more data follows.
"""

from __future__ import annotations

import pytest

from syncpb import banana
from syncpb.broker import Limits
from syncpb.jelly import Incomplete, Reader, SecurityOptions, Writer

BOUNDARY_INTS = [0, 1, 127, 128, 129, 16383, 16384, 16385, 2097151, 2097152, 2097153,
                 2**31 - 1, 2**31, -1, -128, -16384]


def _writer() -> Writer:
    return Writer(None, True)


def _reader(data: bytes) -> Reader:
    return Reader(data, 0, SecurityOptions())


@pytest.mark.parametrize("n", BOUNDARY_INTS)
def test_int_written_in_canonical_form(n):
    assert _writer().jelly(n) == banana.encode(n)


@pytest.mark.parametrize("n", BOUNDARY_INTS)
def test_int_read_whole_cut_and_with_trailing_data(n):
    data = banana.encode(n)
    assert _reader(data).jelly() == n
    for cut in range(len(data)):
        with pytest.raises(Incomplete):
            _reader(data[:cut]).jelly()
    reader = _reader(data + b"\x05\x81")  # another token follows
    assert reader.jelly() == n
    assert reader.pos == len(data)


@pytest.mark.parametrize("n", [128, 16384, 2097151])
def test_int_inside_a_tuple_takes_the_same_path(n):
    value = (n, 1, "x")
    data = _writer().jelly(value)
    assert _reader(data).jelly() == value


def test_prefix_limit_too_small_for_request_ids_is_refused():
    with pytest.raises(ValueError, match="prefix_limit"):
        Limits(prefix_limit=3)
    with pytest.raises(ValueError, match="prefix_limit"):
        Reader(b"", 0, SecurityOptions(), prefix_limit=3)
    assert Limits(prefix_limit=4).prefix_limit == 4
