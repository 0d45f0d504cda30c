"""minibert's modules import one another without a circle (every import counted, the lazy ones inside functions
too): each module can be read, tested and imported alone, after the ones it builds on."""

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


def test_no_module_of_minibert_imports_another_in_a_circle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert {"card", "hub", "convert", "twin"} <= graph.keys()
    assert "convert" not in graph["hub"] and "card" not in graph["hub"]  # the circle this test was written for

    def cycle_from(node, path):
        if node in path:
            return path[path.index(node) :] + [node]
        for nxt in sorted(graph.get(node, ())):
            found = cycle_from(nxt, path + [node])
            if found:
                return found
        return None

    for module in graph:
        cycle = cycle_from(module, [])
        # `__init__` imports the model classes it registers; a module importing the package itself
        # (`from . import AUTO_CLASSES`) is fine as long as __init__ does not import it back.
        assert cycle is None, " -> ".join(cycle)
