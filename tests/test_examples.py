"""Every example under examples/ runs end to end, as `make demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_calculator_demo_runs_and_stops_its_servers():
    result = subprocess.run([sys.executable, str(EXAMPLES / "calculator" / "demo.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("started calc-") == 3
    assert "blocking calls:       total of 1000 additions = 1000000" in out
    assert "callback-style calls: total of 1000 additions = 1000000" in out
    assert "division by zero" in out
    assert out.rstrip().endswith("all servers stopped")
