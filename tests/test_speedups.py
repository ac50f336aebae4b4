"""Which codec runs: the compiled one under `make test` (CI fails if it was
not built), the pure-Python reference with SYNCPB_PURE=1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from syncpb import speedups


def test_the_expected_codec_is_in_use() -> None:
    loaded = {name: speedups.load(name) is not None for name in speedups.CODEC_MODULES}
    if speedups.pure_forced():
        assert not any(loaded.values()), loaded
        assert not speedups.codec_compiled()
        return
    missing = [name for name, ok in loaded.items() if not ok]
    if missing:
        message = (f"compiled codec modules not built: {missing} "
                   f"(pip install -e . builds them; needs a C compiler)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert speedups.codec_compiled() == bool(speedups.CODEC_MODULES)


def test_pure_is_said_once_and_chosen_by_the_environment() -> None:
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "from syncpb import speedups\n"
            "print([speedups.load(n) for n in speedups.CODEC_MODULES + ('_cnothing',) * 2])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SYNCPB_PURE": "0"})
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "compiled codec is not built" in line]
    assert len(said) == 1  # the missing module is reported once, not per lookup
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SYNCPB_PURE": "1"})
    assert "compiled codec is not built" not in done.stdout
    assert done.stdout.strip().endswith("None, None]")
