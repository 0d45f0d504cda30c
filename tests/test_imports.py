"""minibert's modules import one another without a circle (every import counted, the lazy
ones inside functions too): each can be read, tested and imported alone, after the ones it builds on."""

import ast
from pathlib import Path

import minibert

PACKAGE = Path(minibert.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The minibert modules `path` imports (`from . import x`, `from .x import y`, `import minibert.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= (
                {node.module} if node.module else {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            )
            if not node.module:
                found.add("__init__")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minibert"):
            found.add(node.module.removeprefix("minibert").removeprefix(".") or "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("minibert.") for a in node.names if a.name.startswith("minibert.")}
    return {m.split(".")[0] for m in found} - {path.stem}


# Every module: the model, its registration, the checkpoint tools (card, hub and convert once imported each other in a
# circle) and the CLI helpers (cli and checks did, until `UserError` moved to errors.py).
CHECKED = {p.stem for p in PACKAGE.glob("*.py")}


def test_the_modules_import_without_a_circle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert {"card", "hub", "convert", "twin"} <= graph.keys()
    assert "convert" not in graph["hub"] and "card" not in graph["hub"]  # the circle this test was written for

    def path_back(start):
        """A chain of imports from `start` back to itself, or None."""
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    for module in sorted(CHECKED):
        cycle = path_back(module)
        # A module importing the package itself (`from . import AUTO_CLASSES`) is fine as long as __init__ does not
        # import it back.
        assert cycle is None, " -> ".join(cycle)
