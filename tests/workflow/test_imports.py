"""The workflow helpers import each other one way, at the top of each module."""

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "pixmim" / "workflow"
# imported inside functions on purpose: numpy, only where a real root is checked (roots.py)
DEFERRED = {"pixmim.evaluation.metrics", "pixmim.evaluation.shape_bias"}


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out += [(n, node) for n in names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names]
    return out


def module_graph(folder: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the workflow modules it imports at module level, and the function-level
    imports of the package's own modules (``file:line module``)."""
    graph, nested = {}, []
    for path in sorted(folder.glob("*.py")):
        name = f"pixmim.workflow.{path.stem}"
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        graph[name] = set()
        for module, node in _imports(tree):
            if id(node) not in top:
                base = getattr(node, "module", None) or module
                line = f"{path.name}:{node.lineno} {base}"
                if base.startswith("pixmim") and base not in DEFERRED and line not in nested:
                    nested.append(line)
            elif module.startswith("pixmim.workflow.") and module != name:
                target = ".".join(module.split(".")[:3])
                if (folder / f"{target.split('.')[2]}.py").is_file() and target != name:
                    graph[name].add(target)
    return graph, nested


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_workflow_modules_import_each_other_one_way():
    graph, nested = module_graph()
    assert graph["pixmim.workflow.targets"] >= {"pixmim.workflow.specs"}  # the graph is read
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    assert nested == []


def test_the_check_sees_a_cycle_and_a_nested_import(tmp_path):
    (tmp_path / "a.py").write_text("from pixmim.workflow.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from pixmim.workflow.c import y\n")
    (tmp_path / "c.py").write_text("import pixmim.workflow.a\n")
    graph, nested = module_graph(tmp_path)
    assert nested == ["b.py:2 pixmim.workflow.c"]
    graph["pixmim.workflow.b"].add("pixmim.workflow.c")
    assert cycle(graph) == ["pixmim.workflow.a", "pixmim.workflow.b", "pixmim.workflow.c",
                            "pixmim.workflow.a"]
