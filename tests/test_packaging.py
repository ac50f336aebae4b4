"""`python -m build` makes an sdist and a wheel; the wheel carries the compiled
parts; built where no C compiler works, the package installs and runs its
pure-Python code, saying so once.

The builds use this environment's setuptools, wheel and Cython
(``--no-isolation``), so the test needs no network.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent


def build(*args: str, cwd: Path, env: dict | None = None) -> None:
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=500,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build("--sdist", "--outdir", str(out), cwd=ROOT)
    (archive,) = out.glob("syncpb-*.tar.gz")
    return archive


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (tree,) = into.glob("syncpb-*")
    return tree


def test_the_sdist_carries_sources_not_build_products(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"pyproject.toml", "setup.py", "tls/_records.c", "syncpb/_heap.c",
            "syncpb/cli/serve.py", "adapters/dbapi.py", "README.md"} <= names
    pyx = {name for name in names if name.startswith("syncpb/_c") and name.endswith(".pyx")}
    assert pyx == {str(p.relative_to(ROOT)) for p in (ROOT / "syncpb").glob("_c*.pyx")}
    assert not any(name.endswith((".so", ".pyc")) for name in names)


def test_the_wheel_carries_the_compiled_parts(sdist: Path, tmp_path: Path) -> None:
    tree = unpack(sdist, tmp_path)
    build("--wheel", "--outdir", str(tmp_path / "wheel"), cwd=tree)
    (wheel,) = (tmp_path / "wheel").glob("syncpb-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    compiled = {name.split("/")[-1].split(".")[0] for name in names if name.endswith(".so")}
    expected = {"_records", "_heap"} | {p.stem for p in (ROOT / "syncpb").glob("_c*.pyx")}
    assert compiled == expected
    assert "syncpb/cli/__main__.py" not in names and "syncpb/__main__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "syncpb = syncpb.cli:run" in archive.read(entry_points).decode()


def test_without_a_compiler_the_build_falls_back_to_pure_python(sdist: Path,
                                                                 tmp_path: Path) -> None:
    tree = unpack(sdist, tmp_path)
    build("--wheel", "--outdir", str(tmp_path / "wheel"), cwd=tree,
          env={"CC": "false", "LDSHARED": "false"})
    (wheel,) = (tmp_path / "wheel").glob("syncpb-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert not any(name.endswith(".so") for name in archive.namelist())
        archive.extractall(site)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "import syncpb\n"
            "assert syncpb.__file__.startswith(sys.argv[1]), syncpb.__file__\n"
            "from syncpb import speedups\n"
            "print('compiled:', speedups.codec_compiled())\n"
            "print('heap tuned:', syncpb.tune_malloc())\n"
            "server = syncpb.Server(syncpb.Root()); server.listen('tcp://127.0.0.1:0')\n"
            "server.stop()\n")
    # -S: no .pth files, so the editable install of this checkout stays out of
    # the way; the dependencies come from this environment's site-packages.
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"],
                            sysconfig.get_paths()["platlib"]])
    done = subprocess.run([sys.executable, "-S", "-c", code, str(site)], cwd=tmp_path,
                          capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": path, "SYNCPB_PURE": "0"})
    assert done.returncode == 0, done.stderr
    assert "compiled: False" in done.stdout
    if platform.libc_ver()[0] == "glibc":  # through ctypes, the extension not built
        assert "heap tuned: True" in done.stdout
    if any((ROOT / "syncpb").glob("_c*.pyx")):
        assert done.stdout.count("compiled codec is not built") == 1
