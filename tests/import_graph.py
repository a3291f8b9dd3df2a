"""The import graph of the project's own code: which module imports which (module-level and deferred
imports alike), drawn as Mermaid for docs/layout.md and checked by tests/test_layout.py.

    python -m tests.import_graph            # Mermaid flowchart of scripts/ by role (scripts.<role>)
    python -m tests.import_graph --modules  # one node per module
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# where each top-level name of the project lives
ROOTS = {
    "handler": REPO_ROOT / "handler",
    "scripts": REPO_ROOT / "scripts",
    "deepfake_client": REPO_ROOT / "client" / "deepfake_client",
    "deepfake_contract": REPO_ROOT / "contract" / "deepfake_contract",
}


def module_files() -> dict[str, Path]:
    """Every module of the project's code, by dotted name."""
    modules = {}
    for root_name, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([root_name, *parts])] = path
    return modules


def _resolve(name: str, known: Iterable[str]) -> str | None:
    """The longest known module that ``name`` is, or is inside of (``a.b.func`` -> ``a.b``)."""
    known = set(known)
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports, wherever in the file the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
            if not all(_resolve(name, known) == name for name in names):
                names.append(base)  # a name defined in ``base`` itself, not a submodule of it
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


def package_of(module: str, depth: int = 2) -> str:
    return ".".join(module.split(".")[:depth])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan): empty when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def collapsed(edges: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph with every module replaced by its package ``depth`` names deep (no self edges)."""
    out: dict[str, set[str]] = {}
    for module, targets in edges.items():
        source = package_of(module, depth)
        out.setdefault(source, set())
        for target in targets:
            if package_of(target, depth) != source:
                out[source].add(package_of(target, depth))
    return out


def role_of(module: str) -> str:
    """``scripts.<role>`` for the tools, the top-level name for everything else."""
    return package_of(module, 2) if module.startswith("scripts.") else package_of(module, 1)


def by_role(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in edges.items():
        source = role_of(module)
        out.setdefault(source, set()).update(role_of(t) for t in targets if role_of(t) != source)
    return out


def mermaid(edges: dict[str, set[str]], only_prefix: str = "scripts") -> str:
    """A Mermaid flowchart of the edges that leave ``only_prefix`` modules (their targets drawn too)."""
    lines = ["flowchart TD"]
    for source in sorted(edges):
        if not source.startswith(only_prefix):
            continue
        for target in sorted(edges[source]):
            lines.append(f"    {source.replace('.', '_')}[{source}] --> {target.replace('.', '_')}[{target}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", action="store_true", help="one node per module, not per package")
    args = parser.parse_args(argv)
    edges = graph()
    if not args.modules:
        edges = by_role(edges)
    print(mermaid(edges))
    found = cycles(graph())
    if found:
        print(f"%% cycles: {found}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
