"""The client library and CLI against the real TorchServe of the session."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image
from requests.adapters import HTTPAdapter

from deepfake_client import (
    AuthenticationError,
    ClientConfig,
    DeepfakeClient,
    InputRejectedError,
    ModelNotFoundError,
    ServerUnavailableError,
    encode_frame,
    sample_frames,
)
from handler.runtimes import cpu_capabilities, plan_precision
from scripts.operations.torchserve import observed_batches
from tests.conftest import Server, cli, image_bytes
from tests.media import constant_rate, write_audio_only, write_video

TIER = "integration"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 30 fps: 20 samples at 2 fps."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", constant_rate(300, Fraction(30)))


def client_for(server: Server, **overrides) -> DeepfakeClient:
    return DeepfakeClient(server.ts.client_config(**overrides))


def test_video_frames_are_all_answered_in_time_order_and_batched(server: Server, video: Path):
    """One frame per request: TorchServe batches the frames of one video together. Packed (the default, 8
    frames per OIP request): 3 requests, and every frame the same answer."""
    batches_before = len(observed_batches(server.ts_log(), "deepfake"))
    with client_for(server, frames_per_request=1) as client:
        analysis = client.analyze_video(video, fps=2.0)
        assert [f.time for f in analysis.frames] == [i / 2 for i in range(20)]
        assert [f.frame_number for f in analysis.frames] == [15 * i for i in range(20)]
        assert all(f.prediction is not None and f.error is None for f in analysis.frames)
        # each frame's answer is the server's answer for exactly that sampled frame
        samples = list(sample_frames(video, 2.0))
        for index in (0, 7, 19):
            direct = client.predict_image(encode_frame(samples[index].image))
            assert analysis.frames[index].prediction.logits == pytest.approx(direct.logits, abs=1e-4)
    deadline = time.monotonic() + 15  # TorchServe may log a batch after answering it: poll the log
    while True:
        new_batches = observed_batches(server.ts_log(), "deepfake")[batches_before:]
        if sum(len(b) for b in new_batches) >= 20 + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling interval, bounded by the deadline
    assert sum(len(b) for b in new_batches) >= 20 + 3  # the frames and the three direct requests
    assert max(len(b) for b in new_batches) > 1, [len(b) for b in new_batches]
    assert analysis.summary.frames == analysis.summary.analyzed == 20
    posts: list[str] = []

    class Counting(HTTPAdapter):
        def send(self, request, *args, **kwargs):
            if request.method == "POST":
                posts.append(request.url)
            return super().send(request, *args, **kwargs)

    with DeepfakeClient(server.ts.client_config(), transport=Counting()) as client:
        packed = client.analyze_video(video, fps=2.0)
    for alone, in_pack in zip(analysis.frames, packed.frames, strict=True):
        assert in_pack.prediction.logits == pytest.approx(alone.prediction.logits, abs=1e-4)
    assert len(posts) == 3 and all(url.endswith("/v2/models/deepfake/infer") for url in posts)  # 8 + 8 + 4


def test_predict_image_inputs_and_refusals(server: Server, tmp_path: Path):
    path = tmp_path / "face.png"
    path.write_bytes(image_bytes(fmt="PNG"))
    with client_for(server) as client:
        from_path = client.predict_image(path)
        assert client.predict_image(path.read_bytes()).logits == from_path.logits
        assert client.predict_image(Image.open(path)).logits == pytest.approx(from_path.logits, abs=1e-6)
        with pytest.raises(InputRejectedError, match="not a recognised image format") as info:
            client.predict_image(b"definitely not an image")
        assert info.value.status == 400
        results = client.predict_images([path, b"junk", tmp_path / "absent.jpg"])
        assert results[0].prediction is not None and results[0].prediction.logits == from_path.logits
        assert "not a recognised image format" in results[1].error
        assert "no such file" in results[2].error
    with client_for(server, model="no_such_model") as client, pytest.raises(ModelNotFoundError):
        client.predict_image(path)


def test_wrong_or_missing_token_is_an_auth_error(server: Server, video: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runtime/key_file.json to fall back on
    for token in ("wrong", None):
        config = ClientConfig(base_url=server.ts.inference_url, management_url=server.ts.management_url, token=token)
        with DeepfakeClient(config) as client, pytest.raises(AuthenticationError, match="refused the token"):
            client.predict_image(image_bytes())
    result = cli(server.ts, "video", str(video), "--quiet", token="wrong")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "refused the token" in result.stderr and "Traceback" not in result.stderr


def test_cli_json_matches_the_library_and_plot_is_a_png(server: Server, video: Path, tmp_path: Path):
    plot = tmp_path / "timeline.png"
    result = cli(server.ts, "video", str(video), "--json", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    with client_for(server) as client:
        library = client.analyze_video(video).to_dict()
    assert [f["time"] for f in data["frames"]] == [f["time"] for f in library["frames"]]
    assert [f["fake_probability"] for f in data["frames"]] == pytest.approx(
        [f["fake_probability"] for f in library["frames"]], abs=1e-5
    )
    assert data["summary"]["verdict"] == library["summary"]["verdict"]
    assert data["summary"]["fake_frame_ratio"] == pytest.approx(library["summary"]["fake_frame_ratio"])
    assert set(data) >= {"frames", "summary", "segments"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert image.size[0] > 500 and image.size[1] > 200


def test_cli_image_prints_the_original_block(server: Server, tmp_path: Path):
    good, bad = tmp_path / "a.jpg", tmp_path / "b.jpg"
    good.write_bytes(image_bytes())
    bad.write_bytes(b"not a jpeg")
    result = cli(server.ts, "image", str(good))
    assert result.returncode == 0, result.stderr
    for field in (
        "Image:",
        "Temperature:",
        "Logits:",
        "Softmax:",
        "Predicted class:",
        "Softmax confidence:",
        "Adjusted confidence:",
    ):
        assert field in result.stdout
    result = cli(server.ts, "image", str(good), str(bad), "--json")
    assert result.returncode == 2
    first, second = json.loads(result.stdout)
    assert first["source"] == str(good) and "logits" in first
    assert second["source"] == str(bad) and "not a recognised image format" in second["error"]


@pytest.mark.parametrize("kind", ["truncated", "text", "audio-only"])
def test_cli_bad_videos_exit_2_without_traceback(server: Server, tmp_path: Path, kind: str):
    path = tmp_path / "clip.mp4"
    if kind == "truncated":
        data = write_video(tmp_path / "full.mp4", constant_rate(60, Fraction(30))).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("just some notes, renamed\n" * 40)
    else:
        write_audio_only(path)
    result = cli(server.ts, "video", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("deepfake-detect: ")
    assert str(path) in result.stderr


def test_management_commands(server: Server):
    result = cli(server.ts, "models", "--json")
    assert result.returncode == 0, result.stderr
    models = {m["modelName"]: m for m in json.loads(result.stdout)}
    assert set(models) == set(server.models)
    assert models["deepfake"]["customizedMetadata"]["settings"]["mean"] == [0.5, 0.5, 0.5]
    result = cli(server.ts, "models")
    assert "deepfake (version 1.0): workers" in result.stdout and "arch resnet18" in result.stdout
    assert re.search(r"runs int8 on openvino, \d+ threads per worker \(archive built for int8\)", result.stdout)
    bf16_runs = plan_precision("bf16", cpu_capabilities())[0]  # fp32 on a CPU without BF16: the CLI says why
    assert f"runs {bf16_runs} on openvino" in result.stdout and "runs fp32 on openvino" in result.stdout
    assert ("which this CPU lacks" in result.stdout) is (bf16_runs != "bf16")
    result = cli(server.ts, "health")
    assert result.returncode == 0 and "READY" in result.stdout
    with client_for(server) as client:
        client.scale(2, "constant")
        assert [w["status"] for w in client.describe("constant")["workers"]] == ["READY", "READY"]
        client.scale(1, "constant")
        client.wait_until_ready("constant", timeout=60)
        assert len(client.describe("constant")["workers"]) == 1


@pytest.mark.unit
def test_unreachable_server_is_unavailable(tmp_path: Path):
    from scripts.operations.torchserve import Ports

    port = Ports.free().inference
    config = ClientConfig(base_url=f"http://127.0.0.1:{port}", token="x", retries=1, backoff=0.01)
    with DeepfakeClient(config) as client, pytest.raises(ServerUnavailableError, match="cannot reach TorchServe"):
        client.predict_image(image_bytes())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepfake_client",
            "health",
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            "x",
            "--retries",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4 and "cannot reach TorchServe" in result.stderr


def test_evaluate_against_the_server_matches_in_process(server: Server, tmp_path: Path):
    from scripts.modeling import evaluate
    from scripts.synthetic.scenes import make_image

    for label in ("real", "fake"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            make_image([11, int(label == "fake"), i], fake=label == "fake").save(
                tmp_path / "images" / label / f"{i}.jpg"
            )
    common = ["--images", str(tmp_path / "images")]
    via_server = ["--server", server.ts.inference_url, "--management-url", server.ts.management_url,
                  "--key-file", str(server.ts.key_file), "--json", str(tmp_path / "server.json")]  # fmt: skip
    # in-process with the archive's own runtime (int8 here): the same numbers as the server's
    in_process = ["--archive", str(server.models["deepfake"].archive), "--json", str(tmp_path / "local.json")]
    assert evaluate.main(common + via_server) == 0
    assert evaluate.main(common + in_process) == 0
    remote = json.loads((tmp_path / "server.json").read_text())["images"]
    local = json.loads((tmp_path / "local.json").read_text())["images"]
    assert remote["samples"] == local["samples"] == 6
    for key in ("accuracy", "auc", "eer", "ece"):
        assert remote[key] == pytest.approx(local[key], abs=1e-4)


def test_frames_travel_at_the_archives_input_size(server: Server, video: Path):
    with client_for(server) as client:
        assert client.input_size("deepfake") == server.models["deepfake"].settings.image_size == 224
    # with no management access the metadata is unknown: frames go at full size, the server resizes
    config = ClientConfig(
        base_url=server.ts.inference_url,
        management_url=server.ts.management_url,
        token=server.ts.keys()["inference"],
        management_token="wrong",
    )
    with DeepfakeClient(config) as client:
        assert client.input_size("deepfake") is None
        analysis = client.analyze_video(video, fps=2.0)
    with client_for(server) as client:
        resized = client.analyze_video(video, fps=2.0)
    assert len(analysis.frames) == len(resized.frames) == 20
    assert all(f.prediction is not None for f in analysis.frames)
    # the same frames, resized by the server instead of before JPEG encoding: close, not identical
    diffs = [
        abs(a.prediction.fake_probability - b.prediction.fake_probability)
        for a, b in zip(analysis.frames, resized.frames, strict=True)
    ]
    assert sum(diffs) / len(diffs) < 0.05
