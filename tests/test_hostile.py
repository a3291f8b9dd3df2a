"""Hostile requests, in-process: each stays within deepfake_contract's budgets and gets its own 4xx.

The same requests against a real TorchServe, batched with innocent ones, are in test_hostile_server.py;
the property-based versions are in test_fuzz.py. Here each case is pinned down exactly.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import pytest
import torch
from PIL import Image

from deepfake_client import (
    ClientConfig,
    DeepfakeClient,
    MalformedAnswerError,
    MockTransport,
    ServerTimeoutError,
    Timeouts,
    make_response,
)
from deepfake_contract import (
    MAX_ANSWER_BYTES,
    MAX_BATCH_PIXELS,
    MAX_ID_LENGTH,
    MAX_IMAGES_PER_REQUEST,
    MAX_JSON_DEPTH,
    NATIVE,
    OIP,
    ContractError,
    ModelMetadata,
    Prediction,
    oip_request,
)
from handler.formats import WireRequest, decode_request, encode_answer, share_batch_budget
from handler.service import DetectorService
from handler.settings import ModelSettings
from tests.conftest import image_bytes, random_checkpoint

TIER = "unit"


def deep_json(levels: int, inner: str = "0") -> bytes:
    return ("[" * levels + inner + "]" * levels).encode()


def refused(item: object, endpoint: str | None = None, content_types: dict | None = None) -> WireRequest:
    request = decode_request(item, content_types, endpoint)
    assert request.error is not None and not request.images, request
    assert len(json.dumps(request.error.to_json(request.protocol))) < 2000  # no echo of what was sent
    return request


def test_a_huge_id_is_refused_and_never_echoed():
    body = oip_request([image_bytes()], "x" * 7_000_000)
    request = refused({"body": body}, OIP)
    assert request.protocol == OIP and request.error.code == 400 and request.request_id is None
    assert f"budget of {MAX_ID_LENGTH}" in request.error.message
    ok = decode_request({"body": oip_request([image_bytes()], "x" * MAX_ID_LENGTH)}, endpoint=OIP)
    assert ok.error is None and ok.request_id == "x" * MAX_ID_LENGTH


def test_many_images_are_refused_before_any_is_built():
    pixels = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [500, 1, 1, 3], "data": [0] * 1500}]}
    started = time.perf_counter()
    request = refused({"body": pixels}, OIP)
    assert request.error.code == 413 and "500 images" in request.error.message
    assert "MAX_IMAGES_PER_REQUEST" in request.error.message
    encoded = base64.b64encode(image_bytes()).decode()
    files = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2000], "data": [encoded] * 2000}]}
    assert refused({"body": files}, OIP).error.code == 413
    many_tensors = {"inputs": [{"name": str(i), "datatype": "BYTES", "shape": [1], "data": [encoded]}
                               for i in range(MAX_IMAGES_PER_REQUEST + 1)]}  # fmt: skip
    assert refused({"body": many_tensors}, OIP).error.code == 413
    assert time.perf_counter() - started < 5  # refused from the shapes, not after decoding
    fits = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [MAX_IMAGES_PER_REQUEST],
                        "data": [encoded] * MAX_IMAGES_PER_REQUEST}]}  # fmt: skip
    assert len(decode_request({"body": fits}, endpoint=OIP).images) == MAX_IMAGES_PER_REQUEST


def test_a_request_over_the_pixel_budget_is_refused_from_the_headers():
    big = io.BytesIO()
    Image.new("RGB", (8000, 5000)).save(big, format="PNG")  # 40 MP each, 80 MP together
    body = oip_request([big.getvalue(), big.getvalue()])
    request = refused({"body": body}, OIP)
    assert request.error.code == 413 and "MAX_REQUEST_PIXELS" in request.error.message


@pytest.mark.parametrize("endpoint", [None, NATIVE, OIP])
def test_json_nested_past_any_limit_is_a_400_not_a_recursion_error(endpoint):
    payload = b'{"image": ' + deep_json(100_000) + b"}"
    request = refused({"body": bytearray(payload)}, endpoint, {"body": "application/json"})
    assert request.error.code == 400 and "MAX_JSON_DEPTH" in request.error.message
    assert request.error.type == "OverBudget" and not request.error.message.startswith("malformed")
    assert request.protocol == (OIP if endpoint == OIP else NATIVE)


def test_bytes_data_nested_900_deep_is_a_400():
    nested: object = ["aGk="]
    for _ in range(900):
        nested = [nested]
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": nested}]}
    request = refused({"body": body}, OIP)
    assert request.error.code == 400 and f"deeper than {MAX_JSON_DEPTH}" in request.error.message
    deep_name = {"inputs": [{"name": nested, "datatype": nested, "shape": nested, "data": []}]}
    assert refused({"body": deep_name}, OIP).error.code == 400  # never a recursive repr in a message


def test_several_files_in_one_multipart_request_are_refused():
    first, second = image_bytes(), image_bytes((10, 10, 10))
    request = refused({"a": bytearray(first), "b": bytearray(second)}, NATIVE)
    assert request.error.code == 400 and "2 files in one request (a, b)" in request.error.message
    binary = refused({"\x89PNG\x00": bytearray(first), "x\x07": bytearray(second)}, NATIVE)
    assert "(?PNG?, x?)" in binary.error.message  # names are shown, never control characters
    one = decode_request({"file": bytearray(first), "note": "text fields are not files"}, endpoint=NATIVE)
    assert one.images == [first]


@pytest.mark.parametrize(
    ("values", "named"),
    [([1.7] * 3, "float"), (["5"] * 3, "str"), ([True, 0, 0], "bool"), ([None, 0, 0], "NoneType")],
)
def test_uint8_data_must_be_integers(values, named):
    body = {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 1, 3], "data": values}]}
    request = refused({"body": body}, OIP)
    assert request.error.code == 400 and f"got {named} values" in request.error.message


def test_the_oip_endpoint_answers_in_the_oip_shape_whatever_the_body():
    for body in ({"body": bytearray(image_bytes())}, {"body": bytearray(b"not json at all")},
                 {"body": {"image": "aGk="}}, {"body": [1, 2]}):  # fmt: skip
        request = refused(body, OIP)
        assert request.protocol == OIP and request.error.code == 400
        assert set(request.error.to_json(request.protocol)) == {"error"}


def test_the_batch_pixel_budget_admits_small_requests_first():
    small = [WireRequest(NATIVE, [b"x"], pixels=10_000) for _ in range(3)]
    large = [WireRequest(OIP, [b"x"], pixels=MAX_BATCH_PIXELS // 2 + 1) for _ in range(3)]
    batch = [large[0], small[0], large[1], small[1], large[2], small[2]]
    share_batch_budget(batch)
    assert all(r.error is None for r in small)
    assert [r.error is None for r in large] == [True, False, False]
    assert all(r.error.code == 503 and "MAX_BATCH_PIXELS" in r.error.message for r in large[1:])


def test_an_answer_over_its_budget_becomes_a_small_500():
    request = WireRequest(OIP, [b"x"], request_id="i" * (MAX_ANSWER_BYTES + 1))  # cannot happen via decode
    prediction = Prediction("Real", 0, [1.0, 0.0], {"Real": 0.7, "Fake": 0.3}, 0.3, 0.7, 0.6, 1.0, 6.0)
    answer = encode_answer(request, [prediction], "deepfake", None)
    assert answer.status == 500 and answer.error_type == "AnswerTooLarge" and len(answer.text) < 200


class CountingRuntime:
    """Records the batch sizes its forward passes run at."""

    def __init__(self, runtime):
        self.runtime, self.sizes, self.info = runtime, [], runtime.info

    def __call__(self, batch):
        self.sizes.append(len(batch))
        return self.runtime(batch)


def test_the_forward_pass_runs_in_chunks_of_the_batch_size(tmp_path):
    weights = tmp_path / "r18.pth"
    torch.save(random_checkpoint("resnet18", 3), weights)
    service = DetectorService.from_checkpoint(weights, ModelSettings())
    service.runtime = CountingRuntime(service.runtime)
    service.max_batch_size = 4
    images = [image_bytes((i * 20, 50, 90)) for i in range(10)]
    alone = [service.predict([image])[0][0] for image in images]
    service.runtime.sizes.clear()
    together, timing = service.predict([*images[:5], b"broken", *images[5:]])
    assert service.runtime.sizes == [4, 4, 2]
    assert together[5].code == 400  # the broken one, in its place
    for one, batched in zip(alone, together[:5] + together[6:], strict=True):
        assert batched.logits == pytest.approx(one.logits, abs=1e-4)
    assert timing.size == 10


# --- the client's side: answers that do not fit the contract ---------------------------------------
GOOD = {"label": "Fake", "class_index": 1, "logits": [0.0, 1.0], "probabilities": {"Real": 0.27, "Fake": 0.73},
        "fake_probability": 0.73, "softmax_confidence": 0.73, "adjusted_confidence": 0.54, "temperature": 1.0,
        "alpha": 6.0}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fake_probability": "high"}, "fake_probability must be a finite number"),
        ({"fake_probability": None}, "fake_probability must be a finite number"),
        ({"fake_probability": 1.5}, r"fake_probability must lie in \[0, 1\]"),
        ({"logits": [1.0]}, "logits must be a list of 2 numbers"),
        ({"class_index": True}, "class_index must be 0 or 1"),
        ({"temperature": 0}, "temperature must be positive"),
        ({"label": 7}, "label must be a text"),
        ({"faces": "none"}, "faces must be a list"),
        ({"faces": [{"box": [1, 2], "score": 0.9, "prediction": {}}]}, "box must be a list of 4"),
    ],
)
def test_a_prediction_that_does_not_fit_the_contract_is_refused(change: dict, message: str):
    Prediction.from_json(GOOD)
    with pytest.raises(ContractError, match=message):
        Prediction.from_json({**GOOD, **change})


def test_metadata_with_a_nonsense_input_size_is_refused():
    good = ModelMetadata(224, ("Real", "Fake"), "Fake", (0.5,) * 3, (0.5,) * 3, "int8", "resnet18", 1.0, 6.0).to_json()
    assert ModelMetadata.from_json(good).input_size == 224
    for size in (0, -5, "224", 10**9, True):
        with pytest.raises(ContractError, match="input_size"):
            ModelMetadata.from_json({**good, "input_size": size})


def client_answering(body: bytes | object) -> DeepfakeClient:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    transport = MockTransport(lambda request: make_response(200, content=content))
    return DeepfakeClient(ClientConfig(base_url="http://127.0.0.1:9", token="t", retries=0), transport=transport)


@pytest.mark.parametrize(
    "body",
    [b"<html>proxy error</html>", b"[" * 100_000, [1, 2], {**GOOD, "fake_probability": "high"}, {"outputs": 3}],
)
def test_the_library_raises_its_own_error_for_malformed_answers(body):
    with client_answering(body) as client, pytest.raises(MalformedAnswerError):
        client.predict_image(image_bytes())


def test_health_models_and_scale_refuse_malformed_answers():
    for body in (b"not json", {"unexpected": True}, [1], {"status": ["Healthy"]}):
        with client_answering(body) as client, pytest.raises(MalformedAnswerError):
            client.health()
    for body in ({"models": "x"}, {"models": [{"name": 1}]}, b"[[[", {"models": [3]}):
        with client_answering(body) as client, pytest.raises(MalformedAnswerError):
            client.models()
    with client_answering(b"<html/>") as client, pytest.raises(MalformedAnswerError):
        client.scale(1)
    with client_answering([{"modelName": "m", "workers": "all of them"}]) as client:
        with pytest.raises(MalformedAnswerError):
            client.ready()
        assert client.metadata() is None  # optional information: unreadable is unknown


def trickling_server(interval: float, total_bytes: int = 10_000) -> tuple[socket.socket, threading.Event]:
    """Answers headers at once, then one byte of body every ``interval`` seconds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n" % total_bytes)  # fmt: skip
                for _ in range(total_bytes):
                    if stop.wait(interval):
                        return
                    try:
                        connection.sendall(b" ")
                    except OSError:
                        break

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


def test_a_trickling_server_cannot_stretch_the_timeout():
    listener, stop = trickling_server(0.2)
    config = ClientConfig(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", token="t",
                          timeouts=Timeouts(connect=0.5, read=1.0))  # fmt: skip
    try:
        with DeepfakeClient(config) as client:
            started = time.monotonic()
            with pytest.raises(ServerTimeoutError, match="read timeout of 1 s"):
                client.predict_image(image_bytes())
            assert time.monotonic() - started < 2 * (0.5 + 1.0)
    finally:
        stop.set()
        listener.close()


def test_explanations_have_a_per_batch_budget_and_read_hostile_bodies_like_predictions():
    """At most MAX_EXPLANATIONS_PER_BATCH images are explained per batch (each costs a backward pass); the
    others get 503 BatchFull and are sent again. An explanation request is read by the same code, so a
    crafted body is its own 4xx."""
    from deepfake_contract import MAX_EXPLANATIONS_PER_BATCH
    from handler.formats import share_explanations

    image = {"body": image_bytes()}
    asked = [decode_request(image, endpoint=NATIVE, explain=True) for _ in range(MAX_EXPLANATIONS_PER_BATCH + 2)]
    predicted = decode_request(image, endpoint=NATIVE)
    share_explanations([*asked, predicted])
    refused = [r for r in asked if r.error is not None]
    assert len(refused) == 2 and all((r.error.code, r.error.type) == (503, "BatchFull") for r in refused)
    assert predicted.error is None  # predictions are not counted against it
    nested = {"body": ("[" * 100_000 + "]" * 100_000).encode()}
    deep = decode_request(nested, {"body": "application/json"}, endpoint=NATIVE, explain=True)
    assert deep.error is not None and 400 <= deep.error.code < 500 and deep.explain


def test_an_oip_request_sent_to_the_explanations_api_is_refused_alone():
    """The explanations API explains an image body; an OIP request there is a 400, not a worker error."""
    request = decode_request({"body": oip_request([image_bytes()])}, None, OIP, explain=True)
    assert request.error is not None and request.error.code == 400 and not request.images
    assert "explanations API takes an image" in request.error.message
    assert decode_request({"body": image_bytes()}, None, "native", explain=True).error is None
