"""The house's rules, read from the code: no import cycles, tools import only down their roles, nothing
outside the client imports its private modules, the handler stands alone, no symlinks, and the README's
Layout names every folder there is."""

from __future__ import annotations

import re
import subprocess

from tests.import_graph import REPO_ROOT, by_role, cycles, graph, mermaid, role_of

TIER = "unit"

# bottom to top: a role may import its own and any role before it
ROLES = ["scripts", "scripts.synthetic", "scripts.operations", "scripts.modeling", "scripts.demo", "scripts.bench"]


def test_the_project_has_no_import_cycle():
    assert cycles(graph()) == []


def test_tools_import_only_down_their_roles():
    uphill = [
        (source, target)
        for source, targets in by_role(graph()).items()
        if source.startswith("scripts")
        for target in targets
        if target.startswith("scripts") and ROLES.index(target) > ROLES.index(source)
    ]
    assert uphill == []


def test_the_roles_ranked_here_are_the_folders_there_are():
    folders = {f"scripts.{p.name}" for p in (REPO_ROOT / "scripts").iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(ROLES) - {"scripts"}
    flat = [p.name for p in (REPO_ROOT / "scripts").glob("*.py") if p.name != "__init__.py"]
    assert flat == [], "every tool belongs to a role's folder"


def test_only_the_client_imports_its_private_modules_and_the_handler_imports_no_tool():
    edges = graph()
    private = re.compile(r"^deepfake_client\._")
    offenders = [
        (source, target)
        for source, targets in edges.items()
        if not source.startswith("deepfake_client")
        for target in targets
        if private.match(target)
    ]
    assert offenders == []
    for source, targets in edges.items():
        if source.startswith(("handler", "deepfake_contract")):
            assert {role_of(t) for t in targets} <= {"handler", "deepfake_contract"}, source
        if source.startswith("deepfake_contract"):
            assert {role_of(t) for t in targets} <= {"deepfake_contract"}, source


def test_the_graph_sees_deferred_imports():
    """An import inside a function counts: precision's generated calibration images come from synthetic."""
    assert "scripts.synthetic.scenes" in graph()["scripts.operations.precision"]


def test_the_repository_has_no_symlink():
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert [line for line in listed.stdout.splitlines() if line.startswith("120000")] == []


def test_the_readme_layout_names_every_folder():
    readme = (REPO_ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    top = {path.split("/")[0] for path in tracked.stdout.split() if "/" in path and not path.startswith(".")}
    roles = {
        path.split("/")[1] for path in tracked.stdout.split() if path.startswith("scripts/") and path.count("/") > 1
    }
    for folder in top:
        assert re.search(rf"^{re.escape(folder)}/", layout, re.M), f"{folder}/ missing from the README's Layout"
    for role in roles:
        assert re.search(rf"^  {re.escape(role)}/", layout, re.M), f"scripts/{role}/ missing from the README's Layout"


def test_docs_layout_draws_todays_graph():
    """docs/layout.md's "After" graph is what ``python -m tests.import_graph`` draws now."""
    text = (REPO_ROOT / "docs" / "layout.md").read_text()
    after = text[text.index("## After") :]
    drawn = after[after.index("```mermaid\n") + len("```mermaid\n") : after.index("```", after.index("```mermaid") + 3)]
    assert drawn.strip() == mermaid(by_role(graph())).strip()


def test_every_test_gets_one_tier_and_a_server_test_is_never_unit():
    from types import SimpleNamespace

    import pytest

    from tests.conftest import tier_of

    def item(module_tier: str | None, *own: str, fixtures: tuple[str, ...] = ()) -> SimpleNamespace:
        markers = [getattr(pytest.mark, name).mark for name in own]
        return SimpleNamespace(own_markers=markers, module=SimpleNamespace(TIER=module_tier), fixturenames=fixtures)

    assert tier_of(item("unit")) == ("unit", None)
    assert tier_of(item("unit", "slow")) == ("slow", None)  # a test's own marker overrides its module's
    assert tier_of(item("integration", fixtures=("server",))) == ("integration", None)
    assert tier_of(item("browser", fixtures=("demo_site",))) == ("browser", None)
    assert "has no TIER" in tier_of(item(None))[1]
    assert "several tiers" in tier_of(item("unit", "slow", "integration"))[1]
    assert "start TorchServe" in tier_of(item("unit", fixtures=("server", "tmp_path")))[1]


def _constants(path) -> list[tuple[int, object]]:
    import ast

    return [(n.lineno, n.value) for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)]


def test_the_shared_defaults_and_rules_are_written_once():
    """Ports, the READY rule and the fake threshold live in deepfake_contract; code elsewhere imports them
    (docstrings aside: only constants in the code count). deploy/kserve/readiness.py stands alone in its
    image, standard library only, and keeps its own copy of the READY rule."""
    shipped = [*(REPO_ROOT / "handler").rglob("*.py"), *(REPO_ROOT / "client" / "deepfake_client").rglob("*.py"),
               *(REPO_ROOT / "scripts").rglob("*.py")]  # fmt: skip
    found = []
    for path in shipped:
        for line, value in _constants(path):
            if value in (8080, 8081, "READY", "deepfake") and not isinstance(value, bool):
                found.append(f"{path.relative_to(REPO_ROOT)}:{line}: {value!r}")
    assert found == []
    contract = REPO_ROOT / "contract" / "deepfake_contract" / "__init__.py"
    assert {8080, 8081, "READY", "deepfake"} <= {value for _, value in _constants(contract)}
