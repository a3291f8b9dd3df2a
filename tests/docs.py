"""The shell commands the README and docs show, read from their ```bash blocks: every one is either
checked here (make targets with ``make -n``, ``deepfake-detect`` and ``python -m scripts...`` lines
parsed by their own argument parsers, the curl examples run against a real TorchServe) or listed in
ELSEWHERE with the test that runs it or why it cannot run on this machine."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/deploy.md", "client/README.md")

# Commands that are not checked by parsing: where they run instead, or why they cannot run here.
ELSEWHERE = {
    "TOKEN=$(python3": "tests/test_docs.py::test_the_curl_examples_answer_as_documented (run by bash)",
    "curl": "tests/test_docs.py::test_the_curl_examples_answer_as_documented (run by bash)",
    "export": "tests/test_environment.py::test_the_readmes_environment_quick_start_word_for_word (run by bash)",
    "docker": "not here (no Docker daemon): tests/test_deploy.py checks the Dockerfile's pins and files",
    "kubectl": "not here (no cluster): tests/test_deploy.py and tests/test_kserve.py validate the manifest "
    "with KServe's own model classes and run KServe's model server in front of TorchServe",
}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # continuation lines joined, the comment dropped

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def shell_blocks(doc: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each ```bash block of ``doc``."""
    blocks, body, start, inside = [], [], 0, False
    for number, line in enumerate((REPO_ROOT / doc).read_text().splitlines(), 1):
        if line.startswith("```"):
            if inside:
                blocks.append((start, body))
                inside = False
            elif line[3:].strip() == "bash":
                inside, start, body = True, number + 1, []
        elif inside:
            body.append(line)
    return blocks


def commands(doc: str) -> list[Command]:
    found = []
    for start, lines in shell_blocks(doc):
        pending, first = "", 0
        for offset, line in enumerate(lines):
            if not pending:
                first = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if not text or text.startswith("#"):
                continue
            words = shlex.split(text, comments=True)
            found.append(Command(doc, first, shlex.join(words) if not text.startswith("TOKEN=") else text))
    return found


def all_commands() -> list[Command]:
    return [command for doc in DOCS for command in commands(doc)]


def elsewhere(command: Command) -> str | None:
    return next((why for prefix, why in ELSEWHERE.items() if command.text.startswith(prefix)), None)
