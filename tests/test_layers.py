"""The layering of docs/architecture: lower layers never import upper ones.

L0-L2 (errors, codecs, flavors, broker) are sans-IO: no sockets, threads,
greenlets or TLS. Only syncpb.tls may import OpenSSL. The check parses
the source, so it holds for imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "syncpb"

# layer.order: within a layer, a module may use those of lower order.
LAYER = {
    "errors": 0.0, "copyable": 0.5,
    "banana": 1.0, "flavors": 1.0, "wirefailure": 1.0, "jellybase": 1.0,
    "jellywriter": 1.1, "jellyreader": 1.1, "jelly": 1.2,
    "cache": 0.6, "events": 1.8, "brokercache": 1.9, "assembly": 1.93, "brokercore": 1.95, "brokerstream": 1.96,
    "broker": 2.0,
    "waiting": 3.0, "osthreads": 3.01, "failure": 3.0, "unixsocket": 3.01, "transport": 3.02, "keepalive": 3.02, "dispatch": 3.02, "timers": 3.05, "deferred": 3.1, "reference": 3.2, "peercheck": 3.25, "portal": 3.3, "passwords": 3.4,
    "incoming": 4.0, "sendqueue": 4.0, "sessioncore": 4.005, "session": 4.01, "greencallers": 4.05, "leading": 4.05,
    "threaded": 4.1, "green": 4.1,
    "heartbeat": 4.5,
    "client": 5.0, "server": 5.0, "util": 5.0, "reconnect": 5.5,
    "speedups": 0.1, "heap": 3.0,
    "__init__": 6.0, "cli": 6.5, "__main__": 7.0,
}
#: subpackages (a layer each, their modules checked as one)
SUBPACKAGES = {"cli"}
#: compiled leaf modules (C, importing nothing of syncpb): any layer may use them
COMPILED_LEAVES = {"_heap"}
#: syncpb.tls and syncpb.adapters sit beside the core: only L6 (the command line) uses them.
EXTRAS = {"tls", "adapters"}
IO_MODULES = {"socket", "ssl", "select", "selectors", "threading", "_thread", "gevent",
              "greenlet", "OpenSSL", "asyncio"}


def imports_of(path: Path) -> set:
    names = set()
    inside = path.parent.relative_to(PACKAGE.parent).parts  # ("syncpb",) or ("syncpb", "cli")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(inside[:len(inside) - node.level + 1]) if node.level else ""
            if node.level and node.module:  # relative: a syncpb module
                names.add(f"{base}.{node.module}")
            elif node.level:  # from . import banana
                names.update(f"{base}.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
    return names


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    modules |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert modules == set(LAYER), "add new modules to LAYER in tests/test_layers.py"


def _sources(module: str) -> list:
    if module in SUBPACKAGES:
        return sorted((PACKAGE / module).glob("*.py"))
    return [PACKAGE / f"{module}.py"]


@pytest.mark.parametrize("module", sorted(LAYER))
def test_imports_only_downward(module):
    names = set().union(*(imports_of(path) for path in _sources(module)))
    for name in names:
        if name.startswith("syncpb."):
            target = name.split(".")[1]
            if target in COMPILED_LEAVES:
                continue
            if target in EXTRAS:
                assert LAYER[module] >= 6, f"{module} (L{LAYER[module]}) imports syncpb.{target}"
                continue
            assert target in LAYER, name
            assert LAYER[target] < LAYER[module] or target == module, \
                f"{module} (L{LAYER[module]}) imports {target} (L{LAYER[target]})"


@pytest.mark.parametrize("module", sorted(m for m, layer in LAYER.items() if layer < 3))
def test_sans_io_layers_import_no_io(module):
    top = {name.split(".")[0] for name in imports_of(PACKAGE / f"{module}.py")}
    assert not top & IO_MODULES, f"{module} imports {sorted(top & IO_MODULES)}"


def test_only_tls_imports_openssl():
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "adapters").rglob("*.py")):
        assert "OpenSSL" not in {n.split(".")[0] for n in imports_of(path)}, path
