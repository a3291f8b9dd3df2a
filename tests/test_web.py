"""The web page: its routes against a real TorchServe, two users at once, and a real headless Chromium."""

from __future__ import annotations

import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from deepfake_client import ClientConfig, DeepfakeClient
from deepfake_client.web import WebConfig, create_app
from scripts.operations.torchserve import Ports
from tests.conftest import Server, cli, image_bytes
from tests.media import constant_rate, write_video

TIER = "integration"

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def web(server: Server) -> FlaskClient:
    return create_app(WebConfig(client=server.ts.client_config())).test_client()


def upload(web: FlaskClient, name: str, data: bytes, query: str = ""):
    return web.post(f"/api/analyze{query}", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def wait_for_job(web: FlaskClient, status_url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = web.get(status_url).get_json()
        if state["state"] != "running" or time.monotonic() > deadline:
            return state
        time.sleep(0.1)  # polling interval, bounded by the deadline


def web_uploads() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("deepfake-web-*")}


def test_an_image_gets_the_servers_answer(web: FlaskClient, server: Server):
    payload = image_bytes(fmt="PNG")
    answer = upload(web, "face.png", payload)
    assert answer.status_code == 200
    data = answer.get_json()
    expected = server.predict("deepfake", payload, "image/png").json()
    assert data["kind"] == "image" and data["name"] == "face.png" and data["no_face"] is False
    assert data["model_notice"] == ""  # a test archive, not the demo
    views = ("explanation", "overlay", "boxes")
    answer = {k: v for k, v in data.items() if k not in ("kind", "name", "no_face", "model_notice", *views)}
    assert set(answer) == set(expected) and answer["label"] == expected["label"]
    for key in ("logits", "fake_probability", "adjusted_confidence", "softmax_confidence", "temperature", "alpha"):
        assert answer[key] == pytest.approx(expected[key], abs=1e-4), key
    # the explanation the page overlays is the server's
    with DeepfakeClient(server.ts.client_config()) as client:
        explained = client.explain(payload)
    served = np.asarray(data["explanation"]["heatmaps"][0]["values"])
    assert served == pytest.approx(np.asarray(explained.heatmaps[0].values), abs=1e-3)
    assert data["overlay"].startswith("data:image/jpeg;base64,") and data["boxes"] is None  # no faces: no boxes


def test_the_demo_video_gets_what_the_cli_prints(web: FlaskClient, server: Server, demo: Path):
    video = demo / "data" / "demo.mp4"
    before = web_uploads()
    answer = upload(web, "demo.mp4", video.read_bytes())
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()
    printed = cli(server.ts, "video", str(video), "--json", check=True).stdout
    expected = json.loads(printed)  # what `deepfake-detect video --json` prints
    assert data["kind"] == "video" and data["name"] == data["source"] == "demo.mp4"
    assert set(data) == {"kind", "name", "explained_frames", *expected}
    by_time = {f["time"]: f["fake_probability"] for f in expected["frames"]}
    explained = data["explained_frames"]  # the three most suspicious frames, most fake first, with overlays
    assert len(explained) == 3 and [f["time"] for f in explained] == sorted(by_time, key=lambda t: -by_time[t])[:3]
    assert all(f["overlay"].startswith("data:image/jpeg;base64,") and f["overlay"] != f["frame"] for f in explained)
    assert data["summary"] == pytest.approx(expected["summary"])
    assert data["thresholds"] == expected["thresholds"] and len(data["segments"]) == len(expected["segments"])
    for got, printed_segment in zip(data["segments"], expected["segments"], strict=True):
        assert got == pytest.approx(printed_segment, abs=1e-5)
    assert [f["time"] for f in data["frames"]] == [f["time"] for f in expected["frames"]] == [i / 2 for i in range(30)]
    assert [f["fake_probability"] for f in data["frames"]] == pytest.approx(
        [f["fake_probability"] for f in expected["frames"]], abs=1e-5
    )
    assert web_uploads() == before  # the upload's folder went with its request


def test_a_long_video_is_followed_through_its_job(web: FlaskClient, tmp_path: Path):
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))  # 10 s: 20 frames
    started = upload(web, "clip.mp4", video.read_bytes(), "?async=1")
    assert started.status_code == 202
    job = started.get_json()
    assert job["kind"] == "video" and job["total"] == 20 and job["status"] == f"/api/jobs/{job['job']}"
    state = wait_for_job(web, job["status"])
    assert state["state"] == "done" and state["done"] == 20, state.get("error")
    assert [f["index"] for f in state["result"]["frames"]] == list(range(20))
    assert len(state["thumbnails"]) == 20 and all(t.startswith("data:image/jpeg;base64,") for t in state["thumbnails"])
    assert web.get("/api/jobs/unknown").status_code == 404


@pytest.mark.parametrize(
    ("name", "data", "status", "message"),
    [
        ("notes.mp4", b"just some notes, renamed\n" * 40, 400, "not an image (JPEG, PNG"),
        ("broken.jpg", b"\xff\xd8\xff\xe0 truncated", 400, "cannot decode image"),
        ("empty.png", b"", 400, "not an image"),
    ],
)
def test_bad_files_get_a_message(web: FlaskClient, name: str, data: bytes, status: int, message: str):
    answer = upload(web, name, data)
    assert answer.status_code == status
    assert message in answer.get_json()["message"]


def test_a_truncated_video_gets_a_message(web: FlaskClient, tmp_path: Path):
    data = write_video(tmp_path / "full.mp4", constant_rate(60, Fraction(30))).read_bytes()
    answer = upload(web, "cut.mp4", data[: len(data) // 3])
    assert answer.status_code == 400  # named by the upload's name, not the app's temporary file
    assert answer.get_json()["message"].startswith("cut.mp4: not a readable video")
    started = upload(web, "cut.mp4", data[: len(data) // 3], "?async=1")
    state = wait_for_job(web, started.get_json()["status"])
    assert state["state"] == "error" and state["error"]["message"].startswith("cut.mp4: not a readable video")


def test_an_oversized_upload_is_refused_before_it_is_read(server: Server):
    app = create_app(WebConfig(client=server.ts.client_config(), max_upload_bytes=1024 * 1024)).test_client()
    answer = upload(app, "big.jpg", b"\xff\xd8\xff" + bytes(2 * 1024 * 1024))
    assert answer.status_code == 413
    assert answer.get_json()["message"] == "the file is larger than the upload limit of 1 MB"


def test_an_uploaded_name_is_never_a_path(web: FlaskClient, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    video = write_video(tmp_path / "clip.mp4", constant_rate(30, Fraction(30)))
    answer = upload(web, "../../x.mp4", video.read_bytes())
    assert answer.status_code == 200 and answer.get_json()["name"] == "x.mp4"
    assert not (tmp_path / "x.mp4").exists() and list((tmp_path / "a" / "b").iterdir()) == []


@pytest.mark.unit
def test_torchserve_down_or_not_ready_is_a_clear_message():
    config = ClientConfig(base_url=f"http://127.0.0.1:{Ports.free().inference}", management_url=
                          f"http://127.0.0.1:{Ports.free().management}", token="t", management_token="m",
                          retries=1, backoff=0.01)  # fmt: skip
    app = create_app(WebConfig(client=config)).test_client()
    health = app.get("/api/health")
    assert health.status_code == 503 and "TorchServe is down or not ready" in health.get_json()["message"]
    answer = upload(app, "face.png", image_bytes(fmt="PNG"))
    assert answer.status_code == 503 and "make start" in answer.get_json()["message"]


def test_two_users_uploading_different_videos_get_their_own_results(web: FlaskClient, server: Server, tmp_path: Path):
    videos = {
        "ten.mp4": write_video(tmp_path / "ten.mp4", constant_rate(300, Fraction(30))),  # 20 frames
        "six.mp4": write_video(tmp_path / "six.mp4", constant_rate(90, Fraction(15))),  # 12 frames, other numbers
    }

    def user(name: str) -> dict:
        started = upload(web, name, videos[name].read_bytes(), "?async=1").get_json()
        return wait_for_job(web, started["status"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(videos, pool.map(user, videos), strict=True))
    with DeepfakeClient(server.ts.client_config()) as client:
        for name, path in videos.items():
            expected = client.analyze_video(path).to_dict()
            got = results[name]["result"]
            assert got["source"] == name and len(got["frames"]) == len(expected["frames"])
            assert [f["frame_number"] for f in got["frames"]] == [f["frame_number"] for f in expected["frames"]]
            assert [f["fake_probability"] for f in got["frames"]] == pytest.approx(
                [f["fake_probability"] for f in expected["frames"]], abs=1e-5
            )
    assert len(results["ten.mp4"]["result"]["frames"]) == 20 and len(results["six.mp4"]["result"]["frames"]) == 12


@pytest.mark.unit
def test_uploads_are_sniffed_and_names_only_displayed():
    from deepfake_client.web.app import display_name, sniff

    assert sniff(image_bytes(fmt="JPEG")[:16]) == ("image", "")
    assert sniff(image_bytes(fmt="PNG")[:16]) == ("image", "")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image", "")
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00") == ("video", ".mp4")
    assert sniff(b"\x1aE\xdf\xa3\x01\x00\x00\x00") == ("video", ".mkv")
    assert sniff(b"just some notes") is None and sniff(b"") is None
    assert display_name("../../x.mp4") == "x.mp4"
    assert display_name("C:\\Users\\me\\clip.mp4") == "clip.mp4"
    assert (
        display_name("a\x00b\nc.jpg") == "abc.jpg" and display_name("") == "upload" and display_name(None) == "upload"
    )
