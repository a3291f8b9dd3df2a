"""The client's failure paths through an injected transport: no sockets, no server.

What TorchServe itself answers is tested against a real TorchServe (test_server.py,
test_reliability.py); here a MockTransport plays each failure exactly, so retries, backoff,
deadlines, timeouts and token handling are pinned down.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
import requests
from PIL import Image

from deepfake_client import (
    AuthenticationError,
    ClientConfig,
    DeepfakeClient,
    InputError,
    InputRejectedError,
    ManualClock,
    MockTransport,
    ServerError,
    ServerTimeoutError,
    ServerUnavailableError,
    make_response,
)
from deepfake_client._config import DEFAULT_FRAMES_PER_REQUEST, DEFAULT_MAX_BACKOFF, RETRY_STATUSES
from deepfake_client._replicas import ReplicaPool
from deepfake_client.contract import ModelMetadata, Prediction, oip_response
from tests.conftest import image_bytes
from tests.media import constant_rate, read_index, write_video

TIER = "unit"

URL = "http://127.0.0.1:9"  # never contacted: the transport answers


def answer(fake_probability: float = 0.25) -> dict:
    p = fake_probability
    return {"label": "Fake" if p >= 0.5 else "Real", "class_index": int(p >= 0.5), "logits": [0.0, p],
            "probabilities": {"Real": 1 - p, "Fake": p}, "fake_probability": p,
            "softmax_confidence": max(p, 1 - p), "adjusted_confidence": 0.6,
            "temperature": 1.0, "alpha": 6.0}  # fmt: skip


METADATA = ModelMetadata(224, ("Real", "Fake"), "Fake", (0.5,) * 3, (0.5,) * 3, "int8", "resnet18", 1.0, 6.0)
DESCRIBE = [{"modelName": "deepfake", "workers": [{"id": "9000", "status": "READY"}],
             "customizedMetadata": {"metadata": METADATA.to_json()}}]  # fmt: skip


def frame_index(request: requests.PreparedRequest) -> int | None:
    """The index written in the pixels of the frame a request carries (None: a describe call)."""
    return None if request.method == "GET" else read_index(Image.open(io.BytesIO(request.body)))


def fast_client(handler: Callable, **overrides) -> tuple[DeepfakeClient, MockTransport]:
    transport = MockTransport(handler)
    clock = overrides.pop("clock", None)
    values = {"base_url": URL, "management_url": URL, "token": "t", "management_token": "m",
              "backoff": 0.001, "max_backoff": 0.004} | overrides  # fmt: skip
    return DeepfakeClient(ClientConfig(**values), transport=transport, clock=clock), transport


def sequence(*responses: object) -> Callable:
    """A handler answering with each item in turn: a status code, a response, or an exception."""
    remaining = list(responses)

    def handle(request: requests.PreparedRequest) -> requests.Response:
        item = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            body = answer() if item == 200 else {"code": item, "type": "ServiceUnavailableException", "message": "x"}
            return make_response(item, json=body)
        return item

    return handle


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_retryable_statuses_are_retried_until_an_answer(status: int):
    client, transport = fast_client(sequence(status, status, 200))
    assert client.predict_image(image_bytes()).fake_probability == 0.25
    assert len(transport.requests) == 3
    assert all(r.headers["Authorization"] == "Bearer t" for r in transport.requests)


def test_connection_errors_are_retried_and_then_reported():
    client, transport = fast_client(sequence(requests.ConnectionError("refused"), 200))
    assert client.predict_image(image_bytes()).label == "Real"
    client, transport = fast_client(sequence(requests.ConnectionError("refused")), retries=3)
    with pytest.raises(ServerUnavailableError, match=r"cannot reach TorchServe .* \(4 attempts in"):
        client.predict_image(image_bytes())
    assert len(transport.requests) == 4


def test_a_500_from_a_dying_worker_is_retried_and_no_other_500():
    died = make_response(500, json={"code": 500, "type": "InternalServerException", "message": "Worker died."})
    client, transport = fast_client(sequence(died, 200))
    assert client.predict_image(image_bytes()).label == "Real"
    assert len(transport.requests) == 2


def test_a_worker_that_keeps_dying_is_reported_with_the_attempts():
    died = make_response(507, json={"code": 507, "type": "InternalServerException", "message": "Worker died."})
    client, _transport = fast_client(sequence(died), retries=2)
    with pytest.raises(
        ServerUnavailableError, match=r"answered 507 \(the worker died: Worker died.\) after 3 attempts"
    ):
        client.predict_image(image_bytes())


def test_client_errors_and_other_server_errors_are_not_retried():
    bad = make_response(400, json={"code": 400, "type": "InvalidImage", "message": "cannot decode image"})
    client, transport = fast_client(sequence(bad))
    with pytest.raises(InputRejectedError, match="cannot decode image") as info:
        client.predict_image(b"junk")
    assert (info.value.status, info.value.error_type, len(transport.requests)) == (400, "InvalidImage", 1)
    client, transport = fast_client(sequence(make_response(500, json={"type": "X", "message": "boom"})))
    with pytest.raises(ServerError, match="server error 500"):
        client.predict_image(image_bytes())
    assert len(transport.requests) == 1
    too_big = make_response(413, json={"code": 413, "type": "ImageTooLarge", "message": "over 64 megapixels"})
    client, _ = fast_client(sequence(too_big))
    with pytest.raises(InputRejectedError, match="over 64 megapixels"):
        client.predict_image(image_bytes())
    client, _ = fast_client(sequence(413))  # TorchServe's own body limit, whatever its body says
    with pytest.raises(InputRejectedError, match="larger than the server's max_request_size"):
        client.predict_image(image_bytes())


def test_backoff_is_exponential_capped_and_stops_at_the_deadline():
    config = ClientConfig(backoff=0.25, max_backoff=DEFAULT_MAX_BACKOFF)
    assert [config.backoff_delay(i) for i in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    clock = ManualClock()
    stamps: list[float] = []

    def unavailable(request: requests.PreparedRequest) -> requests.Response:
        stamps.append(clock.now())
        return make_response(503, json={"code": 503, "type": "ServiceUnavailableException", "message": "busy"})

    client, _ = fast_client(
        unavailable, clock=clock, retries=100, backoff=0.02, max_backoff=0.08, retry_deadline=0.6, jitter=0.0
    )
    with pytest.raises(ServerUnavailableError, match="no worker available"):
        client.predict_image(image_bytes())
    # 0.02, 0.04, then capped at 0.08 while the next wait still ends within the 0.6 s deadline
    assert clock.sleeps == pytest.approx([0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08])
    assert stamps == pytest.approx([0.0, 0.02, 0.06, 0.14, 0.22, 0.30, 0.38, 0.46, 0.54])
    assert clock.now() <= 0.6  # the deadline holds: the next wait (to 0.62) was not taken


def test_backoff_is_jittered_honours_retry_after_and_is_logged(caplog: pytest.LogCaptureFixture):
    config = ClientConfig(backoff=0.25, max_backoff=DEFAULT_MAX_BACKOFF)
    delays = [config.retry_delay(2) for _ in range(200)]
    assert all(0.5 <= delay <= 1.0 for delay in delays) and len(set(delays)) > 100  # spread, never longer
    assert ClientConfig(backoff=0.25, jitter=0.0).retry_delay(1) == 0.5
    assert config.retry_delay(0, retry_after=3.0) == 3.0  # what the server asked for ...
    assert config.retry_delay(0, retry_after=600.0) == DEFAULT_MAX_BACKOFF  # ... within the client's cap
    busy = make_response(503, json={"code": 503, "type": "ServiceUnavailableException", "message": "busy"},
                         headers={"Retry-After": "0.3"})  # fmt: skip
    clock = ManualClock()
    client, transport = fast_client(sequence(busy, 200), clock=clock, max_backoff=1.0)
    with caplog.at_level("WARNING", logger="deepfake_client"):
        client.predict_image(image_bytes())
    assert clock.sleeps == [0.3]  # not the 1-4 ms backoff: the server's Retry-After
    assert len(transport.requests) == 2
    [record] = [r for r in caplog.records if r.name == "deepfake_client"]
    assert "HTTP 503; retry 1 of 8 in 0.30 s" in record.getMessage()


def test_a_read_timeout_is_a_clear_error_and_not_retried():
    client, transport = fast_client(sequence(requests.ReadTimeout("slow")))
    with pytest.raises(ServerTimeoutError, match=r"did not answer .* within the read timeout of 120 s"):
        client.predict_image(image_bytes())
    assert len(transport.requests) == 1


def test_a_read_timeout_against_a_silent_socket_fires_within_its_deadline():
    """The one test here with a socket: a listener that accepts and never answers."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = ClientConfig(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", token="t")
        from deepfake_client import Timeouts

        with DeepfakeClient(config, timeouts=Timeouts(connect=1.0, read=0.5)) as client:
            started = time.monotonic()
            with pytest.raises(ServerTimeoutError, match=r"read timeout of 0\.5 s"):
                client.predict_image(image_bytes())
            assert time.monotonic() - started < 3.0


def refused_token() -> requests.Response:
    return make_response(
        400, json={"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}
    )


def test_an_expired_key_from_a_key_file_is_reread_once(tmp_path: Path):
    key_file = tmp_path / "key_file.json"

    def write_keys(inference: str) -> None:
        key_file.write_text(
            json.dumps({"inference": {"key": inference}, "management": {"key": "m"}, "API": {"key": "a"}})
        )

    write_keys("old")

    def server(request: requests.PreparedRequest) -> requests.Response:
        return (
            make_response(200, json=answer()) if request.headers["Authorization"] == "Bearer new" else refused_token()
        )

    transport = MockTransport(server)
    config = ClientConfig(base_url=URL, management_url=URL, key_file=key_file)
    with DeepfakeClient(config, transport=transport) as client:
        with pytest.raises(AuthenticationError, match="refused the token"):  # the file still holds the old key
            client.predict_image(image_bytes())
        assert len(transport.requests) == 1  # re-read, same key: not sent again
        write_keys("new")  # TorchServe renewed the key
        assert client.predict_image(image_bytes()).label == "Real"
        assert [r.headers["Authorization"] for r in transport.requests[1:]] == ["Bearer old", "Bearer new"]


def test_an_explicit_token_that_is_refused_is_not_retried():
    client, transport = fast_client(sequence(refused_token()))
    with pytest.raises(AuthenticationError, match="needs an inference key"):
        client.predict_image(image_bytes())
    assert len(transport.requests) == 1


def test_a_server_that_never_becomes_ready_fails_within_the_deadline():
    starting = make_response(200, json=[{"modelName": "deepfake", "workers": [{"id": "9000", "status": "UNLOADING"}]}])
    clock = ManualClock()
    client, transport = fast_client(sequence(starting), clock=clock)
    with pytest.raises(ServerUnavailableError, match=r"not READY after 0.5 s \(last seen: workers UNLOADING\)"):
        client.wait_until_ready(timeout=0.5, interval=0.125)
    assert clock.sleeps == [0.125] * 4 and len(transport.requests) == 5  # polls at 0, 0.125 ... 0.5, none after
    clock = ManualClock()
    client, transport = fast_client(sequence(requests.ConnectionError("refused")), clock=clock, retries=100,
                                    retry_deadline=60)  # fmt: skip
    with pytest.raises(ServerUnavailableError, match="last seen: cannot reach TorchServe"):
        client.wait_until_ready(timeout=0.25, interval=0.125)
    assert clock.sleeps == [0.125] * 2 and len(transport.requests) == 3  # polls are not retried past the deadline


def per_frame(handle: Callable[[int], requests.Response]) -> Callable:
    """A TorchServe-like server from what it answers each frame: a native request gets that answer; an OIP
    pack gets every frame's, or fails whole with the protocol's error when one of its frames fails."""

    def server(request: requests.PreparedRequest) -> requests.Response:
        if request.method == "GET":
            return make_response(200, json=DESCRIBE)
        if not request.url.endswith("/infer"):
            return handle(frame_index(request))
        answers = [handle(index) for index in oip_frame_indexes(request)]
        failed = next((a for a in answers if a.status_code != 200), None)
        if failed is not None:
            return make_response(failed.status_code, json={"error": failed.json()["message"]})
        predictions = [Prediction.from_json(a.json()) for a in answers]
        return make_response(200, json=oip_response("deepfake", predictions, body_id(request)))

    return server


FRAME_NUMBERS = list(range(0, 300, 15))  # the 20 frames 2 fps samples from 10 s at 30 fps


@pytest.mark.parametrize("per_request", [1, DEFAULT_FRAMES_PER_REQUEST])
def test_a_video_survives_a_worker_crash_and_every_frame_is_answered(tmp_path: Path, per_request: int):
    """Frames whose batch died get 507; retried (a pack as a whole), each still gets the answer for its own
    pixels."""
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))  # 20 samples at 2 fps
    lock, died = threading.Lock(), set()

    def frame(index: int) -> requests.Response:
        with lock:
            first_time = index not in died
            died.add(index)
        if 60 <= index <= 150 and first_time:  # the worker died with these frames' batch
            return make_response(507, json={"code": 507, "type": "InternalServerException", "message": "Worker died."})
        return make_response(200, json=answer(index / 1000))

    client, transport = fast_client(per_frame(frame), max_in_flight=16, frames_per_request=per_request)
    analysis = client.analyze_video(video, 2.0, image_format="PNG")
    assert [f.index for f in analysis.frames] == list(range(20))
    assert all(f.error is None for f in analysis.frames)
    assert [f.prediction.fake_probability for f in analysis.frames] == [f.frame_number / 1000 for f in analysis.frames]
    packs = [FRAME_NUMBERS[i : i + per_request] for i in range(0, 20, per_request)]
    resent = sum(any(60 <= n <= 150 for n in pack) for pack in packs)  # 7 frames alone; 2 packs of 8
    assert len(transport.requests) == 1 + len(packs) + resent  # describe, every request, the resent ones


@pytest.mark.parametrize("per_request", [1, DEFAULT_FRAMES_PER_REQUEST])
def test_refused_frames_are_recorded_in_order_and_none_is_lost(tmp_path: Path, per_request: int):
    """A refused frame fails alone: a pack holding one is sent again frame by frame."""
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))

    def frame(index: int) -> requests.Response:
        if index % 2:
            return make_response(400, json={"code": 400, "type": "InvalidImage", "message": f"frame {index} refused"})
        return make_response(200, json=answer(index / 1000))

    client, _ = fast_client(per_frame(frame), max_in_flight=16, frames_per_request=per_request)
    analysis = client.analyze_video(video, 2.0, image_format="PNG")
    assert [f.index for f in analysis.frames] == list(range(20))
    for frame in analysis.frames:
        if frame.frame_number % 2:
            assert frame.prediction is None and frame.error.endswith(f"frame {frame.frame_number} refused")
        else:
            assert frame.error is None and frame.prediction.fake_probability == frame.frame_number / 1000
    assert (analysis.summary.frames, analysis.summary.failed) == (20, 10)
    assert analysis.to_dict()["frames"][1]["fake_probability"] is None


# --- the Open Inference Protocol ------------------------------------------------------------------
def test_oip_requests_and_answers_follow_the_contract():
    sent = []

    def server(request: requests.PreparedRequest) -> requests.Response:
        if request.method == "GET":
            return make_response(200, json=DESCRIBE)
        body = json.loads(request.body)
        sent.append((request.path_url, body))
        if body["inputs"][0]["data"] == [base64.b64encode(b"junk").decode()]:
            return make_response(400, json={"error": "input 'image', element 0: not a recognised image format"})
        return make_response(200, json=oip_response("deepfake", [Prediction.from_json(answer(0.75))]))

    client, _ = fast_client(server, protocol="oip")
    assert client.predict_image(image_bytes()) == Prediction.from_json(answer(0.75))
    path, body = sent[0]
    assert path == "/v2/models/deepfake/infer"
    assert body["inputs"][0]["datatype"] == "BYTES" and base64.b64decode(body["inputs"][0]["data"][0]) == image_bytes()
    with pytest.raises(InputRejectedError, match="not a recognised image format") as info:
        client.predict_image(b"junk")
    assert (info.value.status, info.value.error_type) == (400, "")
    assert client.metadata() == METADATA and client.input_size() == 224


def test_an_unknown_protocol_is_an_input_error():
    with pytest.raises(InputError, match="protocol must be one of native, oip"):
        ClientConfig(protocol="grpc")


# --- replicas -------------------------------------------------------------------------------------
def test_replica_pool_prefers_healthy_idle_replicas_and_retries_a_failed_one_after_its_cooldown():
    now = [0.0]
    pool = ReplicaPool(["http://a", "http://b/", "http://a"], cooldown=5.0, clock=lambda: now[0])
    assert pool.urls == ["http://a", "http://b"]
    first, second = pool.acquire(), pool.acquire()
    assert {first, second} == {"http://a", "http://b"}  # the least busy first
    pool.release(first, ok=True)
    assert pool.acquire() == first
    pool.release(first, ok=True)
    pool.release(second, ok=False)  # b failed: skipped while a is up
    assert [pool.acquire() for _ in range(3)] == ["http://a"] * 3
    assert pool.acquire(avoid="http://a") == "http://a"  # nothing else is up
    now[0] = 5.0
    assert pool.acquire() == "http://b"  # its cooldown is over: tried again
    for url in ["http://a"] * 4 + ["http://b"]:
        pool.release(url, ok=False)
    now[0] = 6.0
    assert pool.healthy() == [] and pool.acquire() == "http://a"  # all down: the one due back first


def test_frames_spread_over_replicas_and_a_dead_replica_s_frames_go_to_the_others(tmp_path: Path):
    """Replica b stops answering after its first frames: every frame is still answered, in time order."""
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))  # 20 samples
    lock, served = threading.Lock(), {"a": [], "b": [], "c": []}

    def server(request: requests.PreparedRequest) -> requests.Response:
        index = frame_index(request)
        if index is None:
            return make_response(200, json=DESCRIBE)
        replica = request.url.split("//")[1][0]
        with lock:
            if replica == "b" and len(served["b"]) >= 3:
                raise requests.ConnectionError("connection refused")
            served[replica].append(index)
        return make_response(200, json=answer(index / 1000))

    client, transport = fast_client(  # one frame per request: replicas share out requests, whatever they carry
        server,
        base_url="http://a",
        replica_urls=("http://b", "http://c"),
        management_url="http://a",
        max_in_flight=2,
        frames_per_request=1,
    )
    analysis = client.analyze_video(video, 2.0, image_format="PNG")
    assert [f.index for f in analysis.frames] == list(range(20))
    assert [f.prediction.fake_probability for f in analysis.frames] == [f.frame_number / 1000 for f in analysis.frames]
    assert len(served["b"]) == 3 and served["a"] and served["c"]
    assert sorted(served["a"] + served["b"] + served["c"]) == [f.frame_number for f in analysis.frames]
    refused = [r for r in transport.requests if r.url.startswith("http://b") and frame_index(r) is not None]
    assert len(refused) <= 3 + 6  # b is skipped during its cooldown, not hammered with every frame


def test_cli_takes_several_urls(monkeypatch):
    from deepfake_client import _cli

    seen = {}

    def recording_client(config: ClientConfig) -> DeepfakeClient:
        seen["config"] = config
        raise ServerUnavailableError("recorded")

    monkeypatch.setattr(_cli, "DeepfakeClient", recording_client)
    assert _cli.main(["health", "--url", "http://a:1,http://b:2", "--url", "http://c:3", "--protocol", "oip"]) == 4
    config = seen["config"]
    assert config.inference_urls == ("http://a:1", "http://b:2", "http://c:3") and config.protocol == "oip"


def test_oip_health_and_readiness_use_the_protocols_endpoints():
    ready = {"deepfake": True}

    def server(request: requests.PreparedRequest) -> requests.Response:
        if request.path_url == "/v2/health/live":
            return make_response(200, json={"live": True})
        if request.path_url.startswith("/v2/models/") and request.path_url.endswith("/ready"):
            name = request.path_url.split("/")[3]
            if not ready.get(name):
                return make_response(503, json={"error": f"Model with name {name} is not ready."})
            return make_response(200, json={"name": name, "ready": True})
        return make_response(404, json={"error": "not found"})

    client, transport = fast_client(server, protocol="oip")
    assert client.health() == {"status": "Healthy"} and client.ready() is True
    ready["deepfake"] = False
    assert client.ready() is False
    assert [r.path_url for r in transport.requests] == ["/v2/health/live", *["/v2/models/deepfake/ready"] * 2]


def oip_frame_indexes(request: requests.PreparedRequest) -> list[int]:
    """The indexes written in the pixels of every frame an OIP request packs."""
    body = json.loads(request.body)
    [tensor] = body["inputs"]
    return [read_index(Image.open(io.BytesIO(base64.b64decode(item)))) for item in tensor["data"]]


def test_frames_packed_into_oip_requests_get_each_its_own_answer(tmp_path: Path):
    """frames_per_request=4: 20 frames in 5 OIP requests of 4; a pack the server refuses is sent again frame
    by frame, and only its bad frame fails."""
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))  # 20 samples
    packs: list[list[int]] = []
    lock = threading.Lock()

    def server(request: requests.PreparedRequest) -> requests.Response:
        if request.method == "GET":
            return make_response(200, json=DESCRIBE)
        if request.url.endswith("/infer"):
            indexes = oip_frame_indexes(request)
            with lock:
                packs.append(indexes)
            if 135 in indexes:  # one bad frame: OIP fails the whole request
                return make_response(400, json={"error": "image 1 of 4: frame refused"})
            predictions = [Prediction.from_json(answer(i / 1000)) for i in indexes]
            return make_response(200, json=oip_response("deepfake", predictions, body_id(request)))
        index = frame_index(request)
        if index == 135:
            return make_response(400, json={"code": 400, "type": "InvalidImage", "message": "frame 135 refused"})
        return make_response(200, json=answer(index / 1000))

    client, transport = fast_client(server, max_in_flight=8, frames_per_request=4)
    analysis = client.analyze_video(video, 2.0, image_format="PNG")
    assert [f.index for f in analysis.frames] == list(range(20))
    assert sorted(len(p) for p in packs) == [4] * 5 and sorted(i for p in packs for i in p) == list(range(0, 300, 15))
    for frame in analysis.frames:
        if frame.frame_number == 135:
            assert frame.prediction is None and frame.error.endswith("frame 135 refused")
        else:
            assert frame.prediction.fake_probability == frame.frame_number / 1000
    singles = [r for r in transport.requests if r.url.endswith("/predictions/deepfake")]
    assert len(singles) == 4  # the refused pack, frame by frame


def body_id(request: requests.PreparedRequest) -> str | None:
    return json.loads(request.body).get("id")
