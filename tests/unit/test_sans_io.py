"""The protocol core is sans-IO: nothing in ``unified_exec._protocol`` reaches trio.

Two checks. A static one parses every module of the package with ``ast`` and follows
its imports (absolute and relative, ``from pkg import submodule`` included) through
unified_exec transitively. A runtime one imports the modules in a fresh interpreter
with a meta-path finder that refuses trio, then looks at ``sys.modules``.

Both leave out ``unified_exec/__init__.py`` itself: it re-exports the whole library
(backends, server) and so imports trio by design. The runtime check installs a bare
stand-in for that top-level package so that only the protocol modules and what they
import are loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unified_exec

FORBIDDEN = ("trio", "trio_websocket")
ROOT = "unified_exec"
PKG_DIR = Path(unified_exec.__file__).resolve().parent
PROTOCOL = f"{ROOT}._protocol"
PROTOCOL_MODULES = sorted(
    f"{PROTOCOL}.{p.stem}" if p.stem != "__init__" else PROTOCOL
    for p in (PKG_DIR / "_protocol").glob("*.py")
)
# The glob must at least find these (guards against a vacuous parametrization).
EXPECTED_AT_LEAST = {
    PROTOCOL,
    f"{PROTOCOL}._jsonrpc",
    f"{PROTOCOL}._messages",
    f"{PROTOCOL}._reorder",
}


def _source(module: str) -> Path | None:
    """The file of a unified_exec module or package, None if it is not one of ours."""
    if module != ROOT and not module.startswith(ROOT + "."):
        return None
    rel = Path(*module.split(".")[1:])
    for candidate in (PKG_DIR / rel / "__init__.py", (PKG_DIR / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, anywhere (functions too), except under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _imports_of(module: str) -> set[str]:
    """Fully qualified names of the modules ``module`` imports at runtime."""
    path = _source(module)
    assert path is not None, module
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            assert node.level - 1 < len(parts), f"relative import beyond {ROOT} in {module}"
            base = ".".join(parts[: len(parts) - (node.level - 1)])
            if node.module:
                base = f"{base}.{node.module}"
        else:
            assert node.module is not None
            base = node.module
        names.add(base)
        for alias in node.names:  # `from pkg import submodule`
            if _source(f"{base}.{alias.name}") is not None:
                names.add(f"{base}.{alias.name}")
    return names


def _with_parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too.

    The top package is left out on purpose (see the module docstring), so an import of
    plain ``unified_exec`` adds nothing; ``from .. import x`` still adds ``unified_exec.x``.
    """
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def _reachable(start: str) -> dict[str, list[str]]:
    """Every module reachable from ``start``, each with one import chain leading to it."""
    chains: dict[str, list[str]] = {}
    todo = [(name, [name]) for name in sorted(_with_parents(start))]
    while todo:
        module, chain = todo.pop()
        if module in chains:
            continue
        chains[module] = chain
        if _source(module) is None or module == ROOT:
            continue
        for name in sorted(_imports_of(module)):
            for target in sorted(_with_parents(name)) if _source(name) else [name]:
                if target not in chains:
                    todo.append((target, [*chain, target]))
    return chains


def _forbidden_chains(start: str) -> list[str]:
    return [
        " -> ".join(chain)
        for name, chain in sorted(_reachable(start).items())
        if name.split(".")[0] in FORBIDDEN
    ]


def test_protocol_package_has_the_expected_modules() -> None:
    assert set(PROTOCOL_MODULES) >= EXPECTED_AT_LEAST


def test_static_checker_sees_trio_where_it_is() -> None:
    # Guard against a vacuous checker: the rpc backend module does use trio.
    assert any(
        chain.endswith("-> trio") for chain in _forbidden_chains("unified_exec.backends._rpc")
    )
    assert "unified_exec._events" in _reachable(f"{PROTOCOL}._reorder")


@pytest.mark.parametrize("module", PROTOCOL_MODULES)
def test_protocol_modules_never_reach_trio_statically(module: str) -> None:
    assert _forbidden_chains(module) == []


_RUNTIME_CHECK = textwrap.dedent(
    """
    import importlib.abc
    import sys
    import types

    FORBIDDEN = {forbidden!r}


    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"sans-IO violation: import of {{name}}")
            return None


    sys.meta_path.insert(0, Refuse())
    # A bare top-level package: its real __init__ re-exports trio-based backends.
    pkg = types.ModuleType("unified_exec")
    pkg.__path__ = [{pkg_dir!r}]
    sys.modules["unified_exec"] = pkg

    from unified_exec._protocol import _jsonrpc, _messages, _reorder
    from unified_exec._events import ClosedEvent

    # exercise the code paths a little, in case something imports lazily
    line = _jsonrpc.encode(_jsonrpc.Notification("process/closed", {{"processId": "p", "seq": 1}}))
    message = _jsonrpc.NdjsonDecoder().feed(line.encode() + b"\\n")[0]
    params = _messages.structure(_jsonrpc.decode(message).params, _messages.ClosedParams)
    _messages.unstructure(params)
    assert _reorder.SeqReorderer().push(ClosedEvent(seq=params.seq)) == [ClosedEvent(seq=1)]

    loaded = sorted(n for n in sys.modules if n.split(".")[0] in FORBIDDEN)
    assert not loaded, loaded
    print("ok")
    """
)


def test_protocol_modules_never_load_trio_at_runtime() -> None:
    script = _RUNTIME_CHECK.format(forbidden=FORBIDDEN, pkg_dir=str(PKG_DIR))
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
