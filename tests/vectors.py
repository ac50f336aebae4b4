"""Access to the golden PB byte streams recorded from real Twisted."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

_HERE = Path(__file__).resolve().parent
# A copy of ../shared/pb-vectors lives in the repository so that a clone
# anywhere can run the golden tests; SYNCPB_VECTORS points elsewhere.
VECTOR_DIR = Path(os.environ.get("SYNCPB_VECTORS", _HERE / "pb-vectors"))


def scenario_names() -> List[str]:
    """Names of every recorded scenario."""
    return sorted(p.stem for p in VECTOR_DIR.glob("*.json"))


def load(name: str) -> Dict[str, Any]:
    """The parsed JSON of one scenario."""
    return json.loads((VECTOR_DIR / f"{name}.json").read_text())


def frames(name: str) -> List[Dict[str, Any]]:
    """Frames of one scenario with ``raw`` bytes and ``value`` added."""
    out = []
    for frame in load(name)["frames"]:
        frame = dict(frame)
        frame["raw"] = bytes.fromhex(frame["hex"])
        frame["value"] = ast.literal_eval(frame["decoded"])
        out.append(frame)
    return out


def all_frames() -> Iterator[Tuple[str, int, Dict[str, Any]]]:
    """Every frame of every scenario as ``(scenario, index, frame)``."""
    for name in scenario_names():
        for index, frame in enumerate(frames(name)):
            yield name, index, frame


def stream(name: str, direction: str) -> Tuple[bytes, List[Any]]:
    """One direction's concatenated bytes and its list of decoded values."""
    chosen = [f for f in frames(name) if f["dir"] == direction]
    return b"".join(f["raw"] for f in chosen), [f["value"] for f in chosen]
