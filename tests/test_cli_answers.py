"""The CLI against a server that answers what no deepfake-serve server answers: exit 5, one line, no
traceback, never exit 0. The server is a real HTTP server on loopback playing a broken or hostile one.
Every command and case runs in-process through the CLI's ``main`` (an exception escaping it fails the
test); one runs as a user runs it, a subprocess, for what only a whole process shows (its stderr)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import image_bytes
from tests.media import constant_rate, write_video

TIER = "unit"

GOOD = {"label": "Fake", "class_index": 1, "logits": [0.0, 1.0], "probabilities": {"Real": 0.27, "Fake": 0.73},
        "fake_probability": 0.73, "softmax_confidence": 0.73, "adjusted_confidence": 0.54, "temperature": 1.0,
        "alpha": 6.0}  # fmt: skip
METADATA = {"input_size": -3, "labels": ["Real", "Fake"], "fake_label": "Fake", "mean": [0.5] * 3, "std": [0.5] * 3,
            "precision": "int8", "arch": "resnet18", "temperature": 1.0, "alpha": 6.0}  # fmt: skip

# what the server answers, by case: (path prefix -> body)
CASES = {
    "not json": {"": b"<html>502 from some proxy</html>"},
    "no fields": {"": b"{}"},
    "wrong types": {"/ping": b'{"status": ["Healthy"]}', "/models": b'{"models": [{"modelName": 7}]}',
                    "/predictions": json.dumps({**GOOD, "fake_probability": "high"}).encode(), "": b"[1, 2]"},
    "null probability": {"/predictions": json.dumps({**GOOD, "fake_probability": None}).encode(),
                         "/models/deepfake": json.dumps([{"modelName": "deepfake", "workers": [],
                                                          "customizedMetadata": {"metadata": METADATA}}]).encode()},
}  # fmt: skip


class Answers(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, bytes]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = next((v for k, v in sorted(self.answers.items(), key=lambda kv: -len(kv[0]))
                     if self.path.startswith(k)), b"{}")  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def answering(answers: dict[str, bytes]) -> Iterator[str]:
    """A loopback HTTP server answering ``answers``; yields its URL."""
    handler = type("Handler", (Answers,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=list(CASES))
def odd_server(request: pytest.FixtureRequest) -> Iterator[str]:
    with answering(CASES[request.param]) as url:
        yield url


def argv(url: str, command: list[str]) -> list[str]:
    return [command[0], "--url", url, "--management-url", url, "--token", "t", "--management-token", "m",
            "--retries", "0", *command[1:]]  # fmt: skip


def assert_one_line_refusal(command: list[str], returncode: int, stderr: str) -> None:
    assert "Traceback" not in stderr, (command, stderr)
    if command[0] == "health" and returncode == 4:  # "Unhealthy" is a fair reading of no status
        return
    assert returncode == 5, (command, returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepfake-detect: "), (command, stderr)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "x.jpg").write_bytes(image_bytes())
    write_video(folder / "clip.mp4", constant_rate(30, Fraction(30)))
    return folder


COMMANDS = (["health"], ["models"], ["scale", "2"], ["image", "x.jpg"], ["image", "x.jpg", "--json"],
            ["video", "clip.mp4", "--quiet"], ["video", "clip.mp4", "--json"])  # fmt: skip


def test_every_command_reports_a_malformed_answer_in_one_line(
    odd_server: str, inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    from deepfake_client._cli import main

    monkeypatch.chdir(inputs)  # the paths as a user in that folder gives them
    for command in COMMANDS:
        returncode = main(argv(odd_server, command))
        assert_one_line_refusal(command, returncode, capsys.readouterr().err)


def test_the_program_reports_it_in_one_line_as_a_user_runs_it(inputs: Path):
    with answering(CASES["wrong types"]) as url:
        command = ["video", "clip.mp4", "--json"]
        result = subprocess.run(
            [sys.executable, "-m", "deepfake_client", *argv(url, command)],
            cwd=inputs, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert_one_line_refusal(command, result.returncode, result.stderr)
    assert result.stdout == ""


def test_every_command_of_both_programs_takes_verbose():
    from deepfake_client._cli import get_parser
    from deepfake_client.web.__main__ import get_parser as web_parser

    parser = get_parser()
    for argv in (["image", "a.jpg"], ["video", "a.mp4"], ["scan", "folder"], ["models"], ["health"],
                 ["scale", "2"]):  # fmt: skip
        assert parser.parse_args([*argv, "-vv"]).verbose == 2 and parser.parse_args(argv).verbose == 0, argv
    assert web_parser().parse_args(["--verbose"]).verbose == 1


def test_verbose_shows_the_client_log_on_stderr(capsys: pytest.CaptureFixture):
    import logging

    from deepfake_client._config import show_client_log

    log = logging.getLogger("deepfake_client")
    before = list(log.handlers), log.level
    try:
        show_client_log(2, "deepfake-detect")
        log.debug("GET http://x/ping: HTTP 200 in 1.0 ms")
        assert capsys.readouterr().err == "deepfake-detect: GET http://x/ping: HTTP 200 in 1.0 ms\n"
    finally:
        log.handlers[:], log.level = before[0], before[1]
