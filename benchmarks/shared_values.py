"""Does encoding and decoding stay linear when a value shares its parts?

A benchmark script, not a test. Jelly numbers a container on its second
sighting and puts a ``reference`` header before its first occurrence, so a
value whose containers are seen twice (records listed, then indexed by
number) makes one header per record. The compiled writer once moved its
buffer's tail for every header, which made such values quadratic: 10,000
indexed records took 6.6 s to encode against the pure writer's 0.13 s.

For each shape this prints the milliseconds to encode (``Writer.jelly``)
and to decode (``Reader.jelly``) a value of ``--count`` items and of four
times as many (the best of ``--runs``), the growth between the two (4.0x
is linear; 16x quadratic), for the pure-Python codec and, when built, the
compiled one, and the compiled time against the pure at the larger size.
Shapes:

* ``plain records``: records with nothing shared (the control);
* ``indexed records``: the records, then a dict of the same records by
  number (a header per record, all for the piece being written);
* ``indexed, blob between``: the same with a 4 KiB byte string between
  the two (the records' piece is flushed before their headers are known);
* ``tuple chain``: tuples each holding the one before, listed again (a
  header per tuple, cycles through tuples).

Each timing runs with the garbage collector off (after a collection):
its full collections grow with the number of live objects, for both
codecs alike, and would hide the codec's own growth. What is left above
4.0x is the processor's caches (the larger values no longer fit): the
compiled codec's time per item stays within 1.5-3 µs from 10,000 to
320,000 indexed records. A quadratic path shows as 16x.

    python benchmarks/shared_values.py [--count 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from syncpb.jellyreader import Reader as PyReader
from syncpb.jellywriter import Writer as PyWriter
from syncpb.jellybase import SecurityOptions

try:
    from syncpb._creader import Reader as CReader
    from syncpb._cwriter import Writer as CWriter
except ImportError:  # not built: the pure codec only
    CReader = CWriter = None


def plain_records(count: int) -> Any:
    return [{"n": n, "tags": [n, "t"]} for n in range(count)]


def indexed_records(count: int, blob_between: bool = False) -> Any:
    records = plain_records(count)
    value: Dict[str, Any] = {"records": records}
    if blob_between:
        value["blob"] = b"b" * 4096
    value["by_n"] = {record["n"]: record for record in records}
    return value


def tuple_chain(count: int) -> Any:
    chain: List[Any] = []
    previous: Any = (chain,)
    root = previous
    for _ in range(count):
        previous = (previous,)
        chain.append(previous)
    return root


SHAPES: List[Tuple[str, Callable[[int], Any]]] = [
    ("plain records", plain_records),
    ("indexed records", indexed_records),
    ("indexed, blob between", lambda count: indexed_records(count, True)),
    ("tuple chain", tuple_chain),
]


def best_of(runs: int, action: Callable[[], Any]) -> float:
    """The shortest of ``runs`` timings, each with the collector off (its
    full collections grow with the number of live objects, whichever codec
    made them, and would hide the codec's own growth)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            action()
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return best


def measure(writer: Any, reader: Any, value: Any, runs: int) -> Tuple[float, float]:
    """Seconds to encode ``value`` and to decode its bytes."""
    data = writer().jelly(value)
    encode = best_of(runs, lambda: writer().jelly(value))
    decode = best_of(runs, lambda: reader(data, 0, SecurityOptions()).jelly())
    return encode, decode


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=positive, default=10000, help="items at the smaller size")
    parser.add_argument("--runs", type=positive, default=3, help="runs per figure (the best is kept)")
    args = parser.parse_args(argv)
    codecs = [("pure", PyWriter, PyReader)]
    if CWriter is not None:
        codecs.append(("compiled", CWriter, CReader))
    else:
        print("the compiled codec is not built: pure-Python figures only")
    small, large = args.count, args.count * 4
    print(f"Encoding and decoding values with shared parts, {small:,} and {large:,} items; "
          f"ms (best of {args.runs}); growth: time at {large:,} / time at {small:,} "
          "(4.0x is linear)\n")
    print("| shape | codec | encode ms | encode growth | decode ms | decode growth "
          "| encode vs pure | decode vs pure |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, make in SHAPES:
        values = make(small), make(large)
        pure_large: Tuple[float, float] = (0.0, 0.0)
        for codec, writer, reader in codecs:
            at_small = measure(writer, reader, values[0], args.runs)
            at_large = measure(writer, reader, values[1], args.runs)
            if codec == "pure":
                pure_large = at_large
                versus = ("", "")
            else:
                versus = (f"{at_large[0] / pure_large[0]:.2f}x",
                          f"{at_large[1] / pure_large[1]:.2f}x")
            print(f"| {name} | {codec} | {at_large[0] * 1e3:,.1f} "
                  f"| {at_large[0] / at_small[0]:.1f}x | {at_large[1] * 1e3:,.1f} "
                  f"| {at_large[1] / at_small[1]:.1f}x | {versus[0]} | {versus[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
