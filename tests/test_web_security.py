"""The web page serves only its own origin, within its limits: Host and Origin checks, security headers,
one job limit for every analysis, and an oversized body refused before it is read.

No TorchServe here: the page's client gets an injected transport (the real page against a real
TorchServe and a real browser is tests/test_web.py, which repeats the origin checks there).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from deepfake_client import ClientConfig, DeepfakeClient, MockTransport, make_response
from deepfake_client.web import WebConfig, create_app, create_server
from deepfake_client.web.app import SECURITY_HEADERS, cross_site, host_allowed
from deepfake_contract import Prediction, oip_response
from scripts.operations.torchserve import Ports
from tests.conftest import image_bytes
from tests.media import constant_rate, write_video
from tests.test_client_transport import DESCRIBE, METADATA, answer
from tests.test_web import wait_for_job

TIER = "unit"

URL = "http://127.0.0.1:9"  # never contacted: the transport answers


def answered(request, probability: float = 0.5):
    """TorchServe's answer in the request's own format: one image (native), or every image of an OIP pack."""
    if request.method == "GET":
        return make_response(200, json=DESCRIBE)
    if request.url.endswith("/infer"):
        count = len(json.loads(request.body)["inputs"][0]["data"])
        return make_response(200, json=oip_response("deepfake", [Prediction.from_json(answer(probability))] * count))
    return make_response(200, json=answer(probability))


class GatedServer:
    """Answers like TorchServe, but holds every prediction until ``release`` is set."""

    def __init__(self) -> None:
        self.release, self.predicting = threading.Event(), threading.Event()

    def __call__(self, request):
        if request.method != "GET":
            self.predicting.set()
            assert self.release.wait(60), "never released"
        return answered(request, 0.25)


def page(max_jobs: int = 4, transport=None, **config) -> FlaskClient:
    transport = transport or MockTransport(answered)
    client_config = ClientConfig(base_url=URL, management_url=URL, token="t", management_token="m")
    client = DeepfakeClient(client_config, transport=transport)
    return create_app(WebConfig(client=client_config, max_jobs=max_jobs, **config), client=client).test_client()


def upload(app: FlaskClient, data: bytes, name: str = "x.png", query: str = "", **headers):
    return app.post(f"/api/analyze{query}", data={"file": (io.BytesIO(data), name)},
                    content_type="multipart/form-data", headers=headers)  # fmt: skip


def test_a_foreign_host_name_is_refused():
    app = page()
    assert upload(app, image_bytes(fmt="PNG")).status_code == 200  # the test client's Host: localhost
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost:notaport"):
        answer_ = upload(app, image_bytes(fmt="PNG"), Host=host)
        assert answer_.status_code == 421 and answer_.get_json()["error"] == "bad_host", host
        assert app.get("/", headers={"Host": host}).status_code == 421
    proxied = page(allowed_hosts=("detector.example.org",))
    assert upload(proxied, image_bytes(fmt="PNG"), Host="detector.example.org").status_code == 200
    assert upload(proxied, image_bytes(fmt="PNG"), Host="localhost").status_code == 421


def test_a_cross_site_post_is_refused():
    app = page()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://localhost:9999"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):  # fmt: skip
        refused = upload(app, image_bytes(fmt="PNG"), **headers)
        assert refused.status_code == 403 and refused.get_json()["error"] == "cross_site", headers
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert upload(app, image_bytes(fmt="PNG"), **same).status_code == 200
    assert app.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CSP/CORS


def test_every_answer_carries_the_security_headers():
    app = page()
    for response in (app.get("/"), app.get("/static/app.js"), app.get("/api/health"), app.get("/api/jobs/none"),
                     upload(app, b"not an image"), upload(app, b"", Host="evil.example")):  # fmt: skip
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.path, name)
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_the_origin_rules():
    assert host_allowed("127.0.0.1:8000", ("127.0.0.1:8000",)) and not host_allowed(
        "127.0.0.1:8001", ("127.0.0.1:8000",)
    )
    assert host_allowed("[::1]:8000", ("[::1]",)) and not host_allowed("", ("localhost",))
    assert not cross_site(None, None, "localhost:8000")  # curl, scripts: no browser involved
    assert cross_site("http://localhost:8001", None, "localhost:8000")
    assert not cross_site("https://localhost:8000", "same-origin", "localhost:8000")


def test_synchronous_and_background_analyses_share_the_job_limit(tmp_path: Path):
    gate = GatedServer()
    app = page(max_jobs=1, transport=MockTransport(gate))
    video = write_video(tmp_path / "clip.mp4", constant_rate(30, Fraction(30))).read_bytes()
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(answer=upload(app, video, "a.mp4")))
    worker.start()
    try:
        assert gate.predicting.wait(30), "the first analysis never started"
        busy = upload(app, video, "b.mp4")
        assert busy.status_code == 503 and busy.get_json()["error"] == "busy"
        busy_async = upload(app, video, "c.mp4", "?async=1")
        assert busy_async.status_code == 503 and busy_async.get_json()["error"] == "busy"
    finally:
        gate.release.set()
        worker.join(60)
    assert first["answer"].status_code == 200 and first["answer"].get_json()["name"] == "a.mp4"
    assert upload(app, video, "d.mp4").status_code == 200  # the slot was given back


def test_an_oversized_body_is_refused_before_it_is_read():
    config = WebConfig(client=ClientConfig(base_url=URL, token="t"), max_upload_bytes=1024 * 1024)
    server = create_server(config, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=10) as connection:
            connection.sendall(
                b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                b"boundary=x\r\nContent-Length: 629145600\r\n\r\n"
            )  # 600 MB declared, none sent
            started = time.monotonic()
            reply = connection.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert time.monotonic() - started < 5  # answered from the headers, not after reading anything
    finally:
        server.close()


def test_the_allowed_host_option_reaches_the_page(tmp_path: Path):
    """python -m deepfake_client.web --allowed-host NAME, as a deployment behind a proxy starts it."""
    port = Ports.free().inference
    command = [sys.executable, "-m", "deepfake_client.web", "--port", str(port),
               "--allowed-host", "detector.example.org", "--url", URL]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page_ = requests.get(f"http://127.0.0.1:{port}/", timeout=5, headers={"Host": "detector.example.org"})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "the page did not start"
                time.sleep(0.1)  # polling interval, bounded by the deadline
        assert page_.status_code == 200 and "Content-Security-Policy" in page_.headers
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # its own address
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5, headers={"Host": "evil.example"}).status_code == 421
        other_port = {"Host": f"localhost:{port + 1}"}  # the page's names are pinned to its port
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5, headers=other_port).status_code == 421
    finally:
        process.terminate()
        process.wait(10)


# --- the first hour on the page: no face is an answer, a running video can be cancelled -------------------
def test_an_image_without_a_face_is_an_answer_with_its_name():
    no_face = {"code": 422, "type": "NoFace", "message": "no face found (detector score >= 0.9, faces >= 40 px)"}
    app = page(transport=MockTransport(lambda r: make_response(200, json=DESCRIBE) if r.method == "GET"
                                       else make_response(422, json=no_face)))  # fmt: skip
    answer_ = upload(app, image_bytes(fmt="PNG"), "holiday.png")
    assert answer_.status_code == 200
    data = answer_.get_json()
    assert data["kind"] == "image" and data["no_face"] is True and data["name"] == "holiday.png"
    assert data["message"].startswith("no face found") and "<bytes>" not in data["message"]


def test_a_running_video_can_be_cancelled(tmp_path: Path):
    gate = GatedServer()
    app = page(transport=MockTransport(gate))
    # 30 s: 60 frames, packs of 8 with 16 frames in flight, so that most are still to send when cancelled
    video = write_video(tmp_path / "clip.mp4", constant_rate(900, Fraction(30))).read_bytes()
    started = upload(app, video, "long.mp4", "?async=1").get_json()
    assert gate.predicting.wait(30)
    cancelled = app.delete(started["status"])
    assert cancelled.status_code == 202
    gate.release.set()
    deadline = time.monotonic() + 30
    while (state := app.get(started["status"]).get_json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling interval, bounded by the deadline
    assert state["state"] == "cancelled" and state["done"] < 60  # stopped before the clip's 60 frames
    assert app.delete("/api/jobs/none").status_code == 404
    assert app.delete(started["status"], headers={"Origin": "http://evil.example"}).status_code == 403


def test_the_health_answer_tells_the_page_the_formats_and_the_models_notice():
    notice = {**METADATA.to_json(), "notice": "demo model (synthetic scenes): not a detector for real faces"}
    describe = [{**DESCRIBE[0], "customizedMetadata": {"metadata": notice}}]
    app = page(transport=MockTransport(lambda r: make_response(200, json=describe)))
    health = app.get("/api/health").get_json()
    assert health["notice"].startswith("demo model") and "FLV" in health["video_formats"]
    assert "PNG" in health["image_formats"]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"FLV\x01\x05\x00\x00\x00\x09", ".flv"),
        (b"\x00\x00\x01\xba\x44\x00", ".mpg"),
        (b"\x47" + bytes(187) + b"\x47" + bytes(10), ".ts"),
    ],
)
def test_the_page_takes_the_video_formats_the_cli_reads(head: bytes, kind: str):
    from deepfake_client.web.app import sniff

    assert sniff(head) == ("video", kind)


def test_the_page_has_its_own_command(tmp_path):
    """pip installs ``deepfake-web`` beside ``deepfake-detect``; it runs from any folder."""
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).with_name("deepfake-web")
    assert command.is_file(), "make setup installs the client's console scripts"
    shown = subprocess.run([str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: deepfake-web ")
    assert all(flag in shown.stdout for flag in ("--allowed-host", "--max-upload-mb", "--max-video-minutes"))


# --- a video's length is budgeted: a few KB can declare, or hold, hours between two frames ------------------
def long_gap_clip(path: Path, header_lies: bool = False) -> bytes:
    """Two tiny frames 10 hours apart (a 2 KB MP4); ``header_lies``: its header then claims 0 s (the
    durations of mvhd, tkhd and mdhd set to 1), so that only the frames' timestamps tell."""
    data = bytearray(write_video(path, [Fraction(0), Fraction(36000)], time_base=Fraction(1, 1000)).read_bytes())
    if header_lies:
        for box, skip in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):  # version 0 boxes: duration after these
            at = data.index(box) + 4 + skip
            data[at : at + 4] = (1).to_bytes(4, "big")
    return bytes(data)


class CountingServer:
    """Answers like TorchServe and counts the frames it was asked to predict."""

    def __init__(self) -> None:
        self.frames, self.lock = 0, threading.Lock()

    def __call__(self, request):
        if request.method != "GET":
            count = len(json.loads(request.body)["inputs"][0]["data"]) if request.url.endswith("/infer") else 1
            with self.lock:
                self.frames += count
        return answered(request)


def test_a_video_longer_than_the_pages_limit_is_refused_before_a_frame_is_sent(tmp_path: Path):
    server = CountingServer()
    app = page(transport=MockTransport(server))  # the default limit: 60 minutes
    crafted = long_gap_clip(tmp_path / "gap.mp4")
    refused = upload(app, crafted, "gap.mp4")
    assert refused.status_code == 400 and refused.get_json()["error"] == "bad_input"
    assert refused.get_json()["message"] == "gap.mp4: 36000 s long, over the limit of 3600 s here"
    started = upload(app, crafted, "gap.mp4", "?async=1").get_json()
    state = wait_for_job(app, started["status"])
    assert state["state"] == "error" and "over the limit of 3600 s" in state["error"]["message"]
    assert server.frames == 0


def test_a_video_whose_header_hides_its_length_stops_at_the_limit(tmp_path: Path):
    server = CountingServer()
    app = page(transport=MockTransport(server), max_video_seconds=5)
    refused = upload(app, long_gap_clip(tmp_path / "gap.mp4", header_lies=True), "liar.mp4")
    assert refused.status_code == 400
    assert refused.get_json()["message"] == "liar.mp4: frames past 5 s, the limit here"
    assert server.frames <= 11  # the samples at 0, 0.5, ..., 5 s at most (those in flight are cancelled)
    within = write_video(tmp_path / "four.mp4", constant_rate(120, Fraction(30))).read_bytes()  # 4 s
    assert upload(app, within, "four.mp4").status_code == 200


def test_the_max_video_minutes_option_reaches_the_page(tmp_path: Path):
    """deepfake-web --max-video-minutes, as an operator starts it from any folder."""
    port = Ports.free().inference
    command = [str(Path(sys.executable).with_name("deepfake-web")), "--port", str(port), "--url", URL,
               "--max-video-minutes", "0.05"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    clip = write_video(tmp_path / "ten.mp4", constant_rate(300, Fraction(30)))  # 10 s, over 3 s
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with clip.open("rb") as body:
                    refused = requests.post(
                        f"http://127.0.0.1:{port}/api/analyze", files={"file": ("ten.mp4", body)}, timeout=30
                    )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "the page did not start"
                time.sleep(0.1)  # polling interval, bounded by the deadline
        assert refused.status_code == 400, refused.text  # refused before TorchServe (unreachable here) is asked
        assert refused.json()["message"] == "ten.mp4: 10 s long, over the limit of 3 s here"
    finally:
        process.terminate()
        process.wait(10)
