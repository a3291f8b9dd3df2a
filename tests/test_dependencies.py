"""The dependency sets: the server's runtime apart from the test and benchmark tools, a lock with hashes
that pins what the requirement files pin, the --no-deps packages declared with their reasons, and
TORCH_INDEX reaching pip."""

from __future__ import annotations

import re
import subprocess
import tomllib

from scripts.operations.torchserve import JDK_REQUIREMENT
from tests.import_graph import REPO_ROOT

TIER = "unit"
DEV_ONLY = {"kserve", "grpcio", "selenium", "pytest", "hypothesis", "ruff", "captum", "scikit-image", "mypy", "uv"}


def pins(name: str) -> dict[str, str]:
    text = (REPO_ROOT / name).read_text()
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;#]+)", text, re.M)}


def test_the_server_runtime_carries_no_test_or_benchmark_tool():
    assert DEV_ONLY.isdisjoint(pins("requirements.txt"))
    assert set(pins("requirements-dev.txt")) >= DEV_ONLY
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()


def test_the_lock_pins_every_requirement_at_its_version_with_hashes():
    lock_text = (REPO_ROOT / "requirements-dev.lock").read_text()
    locked = pins("requirements-dev.lock")
    for name in ("requirements.txt", "requirements-dev.txt"):
        for package, version in pins(name).items():
            assert locked.get(package) == version, f"{name}: {package}=={version}, the lock has {locked.get(package)}"
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock_text[lock_text.index("\n", lock_text.index("make lock")) + 1 :])
    for entry in entries:
        if "==" in entry.split("\n")[0]:
            assert "--hash=sha256:" in entry, entry.split("\n")[0]
    assert "deepfake-client" not in locked and "deepfake-contract" not in locked  # installed from this checkout


def test_packages_installed_without_their_dependencies_are_declared_with_why():
    text = (REPO_ROOT / "requirements-nodeps.txt").read_text()
    assert f"\n{JDK_REQUIREMENT}\n" in text and "facenet-pytorch==" in text
    assert "torch < 2.3" in text  # why facenet-pytorch goes without its pins
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "grep '^facenet-pytorch==' requirements-nodeps.txt" in makefile


def test_the_client_declares_what_it_uses():
    client = tomllib.loads((REPO_ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert "av>=14.1" in " ".join(client["dependencies"])  # frame.rotation
    assert any(d.startswith("deepfake-contract") for d in client["dependencies"])


def make_dry_run(*arguments: str) -> str:
    result = subprocess.run(["make", "-n", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_torch_index_reaches_pip_on_a_fresh_setup():
    cpu = "https://download.pytorch.org/whl/cpu"
    install = [line for line in make_dry_run("-W", "requirements.txt", "setup", f"TORCH_INDEX={cpu}").splitlines()
               if "-r requirements.txt" in line]  # fmt: skip
    assert install and f"--extra-index-url {cpu}" in install[0]
    fresh = make_dry_run("-W", "requirements.txt", "setup").splitlines()
    plain = [line for line in fresh if "-r requirements.txt" in line]
    assert plain and "--extra-index-url" not in plain[0]


def test_the_test_tiers_install_the_locked_tools():
    commands = make_dry_run("-W", "requirements-dev.lock", "test-fast")
    assert "--no-deps --require-hashes -r requirements-dev.lock" in commands
    assert "-m pytest -m unit tests" in commands


def test_make_lock_and_make_lint_do_what_the_readme_says():
    lock = make_dry_run("lock")
    assert "uv pip compile requirements-dev.txt --generate-hashes" in lock and "-o requirements-dev.lock" in lock
    lint = make_dry_run("lint")
    assert "ruff check ." in lint and "ruff format --check ." in lint and ".venv/bin/mypy" in lint.splitlines()
