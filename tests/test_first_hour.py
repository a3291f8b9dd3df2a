"""What a new user hits in the first hour, each answered at once with its fix: the CLI as a user runs it
(a subprocess, from a folder that is not the project's) against a real TorchServe where one is needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import requests
import torch
import urllib3

from deepfake_client import ClientConfig, DeepfakeClient, MockTransport, ServerUnavailableError, make_response
from scripts.operations.torchserve import Ports
from tests.conftest import Server, cli, image_bytes, random_checkpoint
from tests.media import constant_rate, write_video
from tests.test_client_transport import answer

TIER = "unit"


def detect(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepfake_client", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_a_server_that_never_answered_is_reported_at_once(tmp_path: Path):
    (tmp_path / "x.jpg").write_bytes(image_bytes())
    url = f"http://127.0.0.1:{Ports.free().inference}"
    started = time.monotonic()
    result = detect("image", "x.jpg", "--url", url, "--token", "t", cwd=tmp_path)
    assert result.returncode == 4 and time.monotonic() - started < 5  # not 9 retries over 20 s
    assert url in result.stderr and "make start" in result.stderr and "Traceback" not in result.stderr


def refused_connection() -> requests.ConnectionError:
    """What requests raises when nothing listens: a NewConnectionError inside."""
    reason = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", reason))


def test_a_server_that_answered_before_is_retried_through_a_restart():
    calls = iter([make_response(200, json=answer()), refused_connection(), refused_connection(),
                  make_response(200, json=answer(0.75))])  # fmt: skip

    def handler(request):
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    config = ClientConfig(base_url="http://127.0.0.1:9", token="t", backoff=0.01, max_backoff=0.01)
    with DeepfakeClient(config, transport=MockTransport(handler)) as client:
        assert client.predict_image(image_bytes()).fake_probability == 0.25
        assert client.predict_image(image_bytes()).fake_probability == 0.75  # two refusals, retried
    with (
        DeepfakeClient(config, transport=MockTransport(lambda r: (_ for _ in ()).throw(refused_connection()))) as fresh,
        pytest.raises(ServerUnavailableError, match="nothing is listening"),
    ):
        fresh.predict_image(image_bytes())


@pytest.mark.integration
def test_a_wrong_model_name_lists_the_served_ones(server: Server, tmp_path: Path):
    (tmp_path / "x.jpg").write_bytes(image_bytes())
    result = cli(server.ts, "image", str(tmp_path / "x.jpg"), "--model", "nope")
    assert result.returncode == 2, result.stderr
    assert "served: " in result.stderr and "deepfake" in result.stderr and "use --model " in result.stderr


@pytest.mark.integration
def test_fps_above_the_videos_own_rate_is_capped(server: Server, tmp_path: Path):
    video = write_video(tmp_path / "ten.mp4", constant_rate(100, Fraction(10)))  # 10 s at 10 fps
    result = cli(server.ts, "video", str(video), "--fps", "1000", "--json")
    assert result.returncode == 0, result.stderr
    assert "above the video's own frame rate (10 fps)" in result.stderr
    import json

    analysis = json.loads(result.stdout)
    assert analysis["fps"] == 10 and len(analysis["frames"]) == 100  # every frame once, not 10,000 samples
    assert [f["frame_number"] for f in analysis["frames"]] == list(range(100))
    assert analysis["notes"] and "every frame once" in analysis["notes"][0]
    tuned = cli(server.ts, "video", str(video), "--json", "--segment-threshold", "0.2", "--segment-low", "0.1",
                "--min-segment-seconds", "3", "--fake-ratio-threshold", "0.4", "--top-k", "3")  # fmt: skip
    thresholds = json.loads(tuned.stdout)["thresholds"]
    assert (thresholds["segment_threshold"], thresholds["segment_low"], thresholds["min_segment_seconds"]) == (
        0.2,
        0.1,
        3,
    )
    assert thresholds["fake_ratio_threshold"] == 0.4 and thresholds["top_k"] == 3


def test_inputs_a_user_tries_get_their_fix(tmp_path: Path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "x.png").write_bytes(image_bytes(fmt="PNG"))
    common = ["--url", f"http://127.0.0.1:{Ports.free().inference}", "--token", "t"]
    folder = detect("image", "photos", *common, cwd=tmp_path)
    assert folder.returncode == 2 and "is a folder; scan it: deepfake-detect scan photos" in folder.stderr
    url = detect("image", "https://example.com/face.jpg", *common, cwd=tmp_path)
    assert url.returncode == 2 and "URLs are not fetched" in url.stderr and "https://example.com/face.jpg" in url.stderr
    video_url = detect("video", "https://example.com/clip.mp4", *common, cwd=tmp_path)
    assert video_url.returncode == 2 and "URLs are not fetched" in video_url.stderr
    image_as_video = detect("video", "x.png", *common, cwd=tmp_path)
    assert image_as_video.returncode == 2 and "this is an image" in image_as_video.stderr
    assert "use deepfake-detect image" in image_as_video.stderr


@pytest.mark.integration
def test_cli_hygiene(server: Server, tmp_path: Path):
    version = detect("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("deepfake-detect ")
    for command, option in (("image", "--timeout"), ("image", "--retries"), ("image", "--retry-deadline"),
                            ("video", "--segment-threshold"), ("video", "--fake-ratio-threshold"),
                            ("video", "--top-k"), ("video", "--format")):  # fmt: skip
        text = " ".join(detect(command, "--help", cwd=tmp_path).stdout.split())
        after = text.split(option, 2)[-1]
        assert "(default" in after.split(" --", 1)[0], (command, option)
    assert "the number of workers" in detect("scale", "--help", cwd=tmp_path).stdout
    # errors on stderr, results on stdout
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(image_bytes())
    bad.write_bytes(b"not an image")
    mixed = cli(server.ts, "image", str(good), str(bad))
    assert mixed.returncode == 2 and "Image: " in mixed.stdout and "not a recognised image" not in mixed.stdout
    assert "bad.jpg" in mixed.stderr and "not a recognised image" in mixed.stderr
    # -vv: every request's status and time on stderr, the answers unchanged on stdout
    plain, traced = cli(server.ts, "image", str(good)), cli(server.ts, "image", str(good), "-vv")
    assert traced.returncode == 0 and traced.stdout == plain.stdout and plain.stderr == ""
    assert re.search(r"deepfake-detect: POST http://127\.0\.0\.1:\d+/predictions/deepfake: HTTP 200 in [\d.]+ ms",
                     traced.stderr), traced.stderr  # fmt: skip
    assert "HTTP 200" not in cli(server.ts, "image", str(good), "-v").stderr  # -v: retries and fail-overs only
    # a closed pipe ends quietly
    command = [sys.executable, "-m", "deepfake_client", "image", "--url", server.ts.inference_url,
               "--key-file", str(server.ts.key_file), *[str(good)] * 40]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.readline()
        process.stdout.close()  # like | head -1
        stderr = process.stderr.read().decode()
        assert process.wait(120) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.integration
def test_make_mar_builds_an_archive_once_and_quietly(tmp_path: Path):
    """What make mar runs, as it runs it: no third-party noise unless DEEPFAKE_VERBOSE=1; an archive whose inputs
    are unchanged is kept (FORCE=1 rebuilds it), one whose settings changed is rebuilt (its inputs' digest, which
    decides, is another: a third int8 build would show the same for ~30 s)."""
    from scripts.operations.archive import digest_file, get_args_parser, inputs_digest, resolve_settings

    root = Path(__file__).resolve().parents[1]
    weights = tmp_path / "mine.pth"
    torch.save(random_checkpoint("resnet18", 4), weights)
    store = tmp_path / "store"
    args = ["--weights", str(weights), "--export-path", str(store), "--precision", "int8"]

    def archive(*extra: str, **env: str) -> str:
        command = [sys.executable, "-m", "scripts.operations.archive", *args, *extra]
        inherited = {k: v for k, v in os.environ.items() if k != "DEEPFAKE_VERBOSE"}
        environment = {**inherited, "PYTHONPATH": str(root), **env}
        result = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    quiet = archive()
    for noise in ("INFO:nncf", "No CUDA runtime", "Overwriting"):
        assert noise not in quiet, noise
    built = (store / "deepfake.mar").stat().st_mtime_ns
    started = time.monotonic()
    assert "is up to date" in archive()  # the same inputs: kept
    assert (store / "deepfake.mar").stat().st_mtime_ns == built and time.monotonic() - started < 30
    verbose = archive("--force", DEEPFAKE_VERBOSE="1")  # FORCE=1
    assert "INFO:nncf" in verbose and "Overwriting" not in verbose
    rebuilt = (store / "deepfake.mar").stat().st_mtime_ns
    assert rebuilt != built
    recorded = digest_file(store, "deepfake").read_text().strip()
    unchanged, changed = (get_args_parser().parse_args([*args, *extra]) for extra in ([], ["--alpha", "3.0"]))
    assert inputs_digest(unchanged, resolve_settings(unchanged)) == recorded  # what "is up to date" compared
    assert inputs_digest(changed, resolve_settings(changed)) != recorded  # a setting changed: rebuilt


def make_dry_run(*arguments: str) -> str:
    """What make would run (make -n), from the project folder, as the README's commands are typed."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["make", "-n", *arguments], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_make_variables_of_the_first_hour():
    assert "--force" in make_dry_run("mar", "WEIGHTS=w.pth", "FORCE=1")
    assert "--force" not in make_dry_run("mar", "WEIGHTS=w.pth")
    assert "scripts.operations.serve start --model faces --model deepfake" in make_dry_run(
        "start", "MODELS=faces,deepfake"
    )
    assert "scripts.operations.serve start --model deepfake" in make_dry_run("start")
    run = make_dry_run("run", "WEIGHTS=/data/models/best_ResNet50.pth")
    assert "--plot /data/models/best_ResNet50_timeline.png" in run and "artifacts/timeline.png" not in run
    assert "--plot artifacts/timeline.png" in make_dry_run("run")


def test_a_crop_other_than_the_trained_one_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture):
    from scripts.operations.archive import get_args_parser, resolve_settings

    weights = tmp_path / "best_ResNet18.pth"
    weights.write_bytes(b"")  # only its sidecar is read here
    (tmp_path / "best_ResNet18.json").write_text('{"settings": {"crop": "full", "mean": [0.5, 0.5, 0.5]}}')
    settings = resolve_settings(get_args_parser().parse_args(["--weights", str(weights), "--crop", "face"]))
    assert settings.crop == "face"  # built as asked...
    printed = capsys.readouterr().out
    assert "WARNING: CROP=face, but these weights were trained with crop full" in printed  # ...with a warning
    resolve_settings(get_args_parser().parse_args(["--weights", str(weights), "--crop", "full"]))
    assert "WARNING" not in capsys.readouterr().out


def test_the_reliability_report_goes_to_docs_only_when_asked(tmp_path: Path):
    """make test writes the report to its temporary folder; make reliability-report over docs/reliability.md."""
    from tests.reliability_report import DOC, REPORT_VARIABLE, report_path

    assert report_path({}, tmp_path) == tmp_path / "reliability.md"
    assert report_path({REPORT_VARIABLE: str(DOC)}, tmp_path) == DOC
    command = make_dry_run("reliability-report")
    assert f"{REPORT_VARIABLE}={DOC}" in command and "pytest tests/test_reliability.py" in command
    # every test module that writes a section runs
    tests = DOC.parent.parent / "tests"
    writers = {
        p.name for p in tests.glob("test_*.py") if re.search(r"^\s+reliability\.(add|table)\(", p.read_text(), re.M)
    }
    assert writers and all(f"tests/{name}" in command for name in writers), writers
    assert REPORT_VARIABLE not in make_dry_run("test")
