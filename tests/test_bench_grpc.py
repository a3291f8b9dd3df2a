"""Section 13's gRPC wire: TorchServe's two inference messages encoded by hand, and the transport adapter
that carries the client's OIP requests over gRPC, against an in-process gRPC server playing TorchServe's
``Predictions`` method (the real frontend answers it in the benchmark's smoke run, tests/test_benchmark.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
import requests

from scripts.bench.benchmark.grpc_wire import (
    PREDICTIONS,
    GrpcTransport,
    _field,
    _varint,
    prediction_bytes,
    predictions_request,
)

TIER = "unit"


def test_the_request_is_torchserves_predictions_request_byte_for_byte():
    # model_name = 1 "m"; input = 3 {"body": b"x"} as a map entry (key = 1, value = 2): as protobuf encodes it
    assert predictions_request("m", {"body": b"x"}) == bytes.fromhex("0a016d1a090a04626f6479120178")
    assert predictions_request("m", {}, version="2") == bytes.fromhex("0a016d" + "120132")
    assert _varint(300) == bytes([0xAC, 0x02])  # protobuf's own example


def test_the_prediction_is_found_among_fields_of_every_wire_type():
    answer = b'{"outputs": []}'
    status = _field(1, _varint(8) + b"")  # a nested message standing for google.rpc.Status
    message = _varint(2 << 3 | 2) + _varint(2) + b"id" + _varint(5 << 3) + _varint(7)  # a string, a varint
    message += _varint(6 << 3 | 1) + bytes(8) + _varint(7 << 3 | 5) + bytes(4)  # fixed64, fixed32
    message += _varint(3 << 3 | 2) + _varint(len(status)) + status + _field(1, answer)
    assert prediction_bytes(message) == answer
    assert prediction_bytes(b"") == b""
    with pytest.raises(ValueError, match="truncated"):
        prediction_bytes(bytes([0x0A, 0x80]))


Received = list[tuple[bytes, dict[str, str]]]


@pytest.fixture
def fake_torchserve() -> Iterator[tuple[str, Received]]:
    """A gRPC server whose Predictions answers like TorchServe: the body's outputs, an error body, or a
    refused token, depending on the request it gets."""
    received: Received = []

    def predictions(request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        received.append((request, metadata))
        if metadata.get("authorization") != "Bearer good":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed")
        if b"refuse-me" in request:
            return _field(1, b'{"error": "the image is not a picture"}')
        return _field(1, json.dumps({"outputs": [], "echo": len(request)}).encode())

    handler = grpc.method_handlers_generic_handler(
        PREDICTIONS.split("/")[1],
        {PREDICTIONS.split("/")[2]: grpc.unary_unary_rpc_method_handler(predictions)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", received
    finally:
        server.stop(None)


def _post(transport: GrpcTransport, path: str, body: bytes, token: str = "good") -> requests.Response:
    session = requests.Session()
    session.mount("http://", transport)
    return session.post(
        f"http://127.0.0.1:9/{path}", data=body, headers={"Authorization": f"Bearer {token}"}, timeout=(2, 10)
    )


def test_oip_inference_travels_over_grpc_with_the_key(fake_torchserve: tuple[str, Received]):
    target, received = fake_torchserve
    transport = GrpcTransport(target)
    body = json.dumps({"inputs": [{"name": "frame-7"}]}).encode()
    answer = _post(transport, "v2/models/deepfake/versions/3/infer", body)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    sent, metadata = received[-1]
    assert sent == predictions_request("deepfake", {"body": body}, version="3")
    assert answer.json()["echo"] == len(sent) and metadata["authorization"] == "Bearer good"
    transport.close()


def test_grpc_failures_reach_the_client_as_http_statuses(fake_torchserve: tuple[str, Received]):
    target, _ = fake_torchserve
    transport = GrpcTransport(target)
    refused = _post(transport, "v2/models/deepfake/infer", b"{}", token="stale")
    assert refused.status_code == 401 and refused.json()["type"] == "PERMISSION_DENIED"
    rejected = _post(transport, "v2/models/deepfake/infer", b'{"id": "refuse-me"}')
    assert rejected.status_code == 422 and rejected.json() == {"error": "the image is not a picture"}
    with pytest.raises(requests.ConnectionError):  # anything but OIP inference goes over HTTP (port 9: closed)
        _post(transport, "predictions/deepfake", b"jpeg")
    transport.close()
