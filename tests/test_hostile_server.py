"""Hostile requests against a real TorchServe: each one batched with innocent requests.

Every hostile request of the hostile-input probe is sent together with distinct innocent images until
TorchServe puts them in one batch; every innocent request must get its own image's answer, every
hostile one its own 4xx in its own wire format, and the worker process must be the same throughout.
What was answered goes into docs/reliability.md ("Hostile input").
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import psutil
import pytest
import requests

from deepfake_client import DeepfakeClient
from deepfake_contract import MAX_IMAGES_PER_REQUEST, oip_request, predictions_from_oip
from scripts.bench import loadtest
from scripts.bench.benchmark.grpc_wire import channel, grpc_target, predictions, predictions_request
from tests.conftest import Server, image_bytes
from tests.reliability_report import ReliabilityRecord
from tests.test_reliability import short, worker_pid

TIER = "integration"

MODEL = "deepfake"


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str  # "native" or "oip"
    body: bytes
    content_type: str
    status: int
    says: str  # a part of the error message
    files: dict | None = None  # a multipart form instead of a body


def deep(levels: int, inner: str) -> str:
    return "[" * levels + inner + "]" * levels


ENCODED = base64.b64encode(image_bytes()).decode()
HOSTILE = [
    Hostile("OIP request with a 7 MB id", "oip", json.dumps(oip_request([image_bytes()], "x" * 7_000_000)).encode(),
            "application/json", 400, "MAX_ID_LENGTH"),
    Hostile("UINT8 tensor declaring 500 images (4.6 KB)", "oip", json.dumps({"inputs": [
        {"name": "x", "datatype": "UINT8", "shape": [500, 1, 1, 3], "data": [0] * 1500}]}).encode(),
            "application/json", 413, "MAX_IMAGES_PER_REQUEST"),
    Hostile("2,000 BYTES images in one request", "oip", json.dumps({"inputs": [
        {"name": "x", "datatype": "BYTES", "shape": [2000], "data": [ENCODED] * 2000}]}).encode(),
            "application/json", 413, "MAX_IMAGES_PER_REQUEST"),
    Hostile("JSON nested 100,000 deep (native path)", "native", ('{"image": ' + deep(100_000, "0") + "}").encode(),
            "application/json", 400, "MAX_JSON_DEPTH"),
    Hostile("JSON nested 100,000 deep (OIP path)", "oip", ('{"inputs": ' + deep(100_000, "0") + "}").encode(),
            "application/json", 400, "MAX_JSON_DEPTH"),
    Hostile("BYTES data nested 900 deep", "oip", json.dumps({"inputs": [{"name": "x", "datatype": "BYTES",
        "shape": [1], "data": json.loads(deep(900, json.dumps(ENCODED)))}]}).encode(),
            "application/json", 400, "MAX_JSON_DEPTH"),
    Hostile("two files in one multipart request", "native", b"", "", 400, "2 files in one request",
            files={"a": ("1.jpg", image_bytes(), "image/jpeg"), "b": ("2.jpg", image_bytes((9, 9, 9)), "image/jpeg")}),
    Hostile("UINT8 data given as floats", "oip", json.dumps({"inputs": [
        {"name": "x", "datatype": "UINT8", "shape": [1, 1, 3], "data": [1.7, 2.0, 3.0]}]}).encode(),
            "application/json", 400, "float values"),
    Hostile("UINT8 data given as strings", "oip", json.dumps({"inputs": [
        {"name": "x", "datatype": "UINT8", "shape": [1, 1, 3], "data": ["5", "5", "5"]}]}).encode(),
            "application/json", 400, "str values"),
    Hostile("UINT8 data given as booleans", "oip", json.dumps({"inputs": [
        {"name": "x", "datatype": "UINT8", "shape": [1, 1, 3], "data": [True, False, True]}]}).encode(),
            "application/json", 400, "bool values"),
    Hostile("a raw JPEG posted to the OIP path", "oip", image_bytes(), "image/jpeg", 400, "send a JSON object"),
    Hostile("a non-JSON text posted to the OIP path", "oip", b"inputs=1", "text/plain", 400, "send a JSON object"),
    # a binary body declared a url-encoded form: TorchServe's form decoder splits it into fields (refused
    # here: several files), or fails on it and the frontend answers 500 itself, before any worker sees it
    Hostile("a PNG posted as a url-encoded form", "native", image_bytes(fmt="PNG"),
            "application/x-www-form-urlencoded", 400, "files in one request"),
    Hostile("a JPEG posted as a url-encoded form", "native", image_bytes(),
            "application/x-www-form-urlencoded", 500, "Bad end of line"),
]  # fmt: skip


def send(server: Server, case: Hostile, session: requests.Session) -> requests.Response:
    path = f"/v2/models/{MODEL}/infer" if case.path == "oip" else f"/predictions/{MODEL}"
    headers = server.headers()
    if case.files is None:
        headers["Content-Type"] = case.content_type
    return session.post(f"{server.ts.inference_url}{path}", data=case.body or None, files=case.files,
                        headers=headers, timeout=120)  # fmt: skip


def check_refusal(case: Hostile, response: requests.Response) -> str:
    assert response.status_code == case.status, (case.name, response.status_code, response.text[:300])
    body = response.json()
    message = body["error"] if case.path == "oip" else body["message"]
    assert set(body) == ({"error"} if case.path == "oip" else {"code", "type", "message"}), (case.name, body)
    assert case.says in message and len(response.content) < 2000, (case.name, message)
    return message


def innocent_requests(server: Server, count: int) -> list[tuple[bytes, list[float]]]:
    images = loadtest.distinct_images(count, seed=11)
    return [(image, server.predict(MODEL, image, "image/png").json()["logits"]) for image in images]


def mixed_round(server: Server, case: Hostile, innocents, attempts: int = 5) -> tuple[requests.Response, int]:
    """Send ``case`` among the innocent requests until TorchServe batches them together; check every answer."""
    for attempt in range(1, attempts + 1):
        session = requests.Session()
        jobs: list[Callable[[], requests.Response]] = [
            functools.partial(server.predict, MODEL, image, "image/png", session) for image, _ in innocents
        ]
        middle = len(jobs) // 2
        jobs.insert(middle, functools.partial(send, server, case, session))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            responses = list(pool.map(lambda job: job(), jobs))
        hostile = responses.pop(middle)
        for (_, logits), response in zip(innocents, responses, strict=True):
            assert response.status_code == 200, (case.name, response.text[:200])
            assert response.json()["logits"] == pytest.approx(logits, abs=1e-4), case.name
        check_refusal(case, hostile)
        ids = {r.headers["x-request-id"] for r in responses}
        hostile_id = hostile.headers.get("x-request-id")
        # awaiting the innocent requests' batches only: a hostile one the frontend refused never reaches a batch
        batches = server.batches_of({hostile_id, *ids}, awaited=ids) if hostile_id else []
        if any(hostile_id in batch and batch & ids for batch in batches):
            return hostile, attempt
    return hostile, 0  # not batched together in any attempt (reported, and checked below)


def test_hostile_requests_fail_alone_inside_batches(server: Server, reliability: ReliabilityRecord):
    innocents = innocent_requests(server, 7)
    pid = worker_pid(server.ts)
    rows, batched = [], 0
    for case in HOSTILE:
        response, attempt = mixed_round(server, case, innocents)
        batched += attempt > 0
        answer = response.json()
        rows.append([case.name, response.status_code, short(answer.get("error") or answer.get("message"), 120),
                     "yes" if attempt else "no (answered before the batch formed)"])  # fmt: skip
        assert worker_pid(server.ts) == pid, case.name
    assert batched >= len(HOSTILE) // 2, "too few hostile requests shared a batch with innocent ones"
    reliability.table("hostile", ["hostile request (with 7 innocent ones)", "HTTP", "answer", "in a batch with them"],
                      rows)  # fmt: skip
    reliability.add(
        "hostile",
        f"Every innocent request got its own image's logits (within 1e-4 of its answer when sent alone); {batched} "
        f"of {len(HOSTILE)} hostile requests shared a TorchServe batch with innocent ones; the worker process was "
        "the same before and after every case.",
        "",
    )


def test_a_describe_header_on_predictions_is_ignored_inside_batches(server: Server):
    """TorchServe forwards a client's ``describe: True`` header to the worker as it does the management API's
    describe. Sent with every request of a crowd, so that it is on the first request of each batch: each still
    gets its own image's answer (the whole batch got a 503 when the handler took it for a describe), and the
    management API's describe still answers."""
    innocents = innocent_requests(server, 16)
    pid = worker_pid(server.ts)
    headers = {**server.headers(), "Content-Type": "image/png", "describe": "True"}
    url = f"{server.ts.inference_url}/predictions/{MODEL}"
    session = requests.Session()
    with ThreadPoolExecutor(max_workers=len(innocents)) as pool:
        responses = list(pool.map(lambda item: session.post(url, data=item[0], headers=headers, timeout=120),
                                  innocents))  # fmt: skip
    for (_, logits), response in zip(innocents, responses, strict=True):
        assert response.status_code == 200, response.text[:300]
        assert response.json()["logits"] == pytest.approx(logits, abs=1e-4)
    ids = {response.headers["x-request-id"] for response in responses}
    assert max(len(batch & ids) for batch in server.batches_of(ids)) > 1  # they were batched together
    with DeepfakeClient(server.ts.client_config()) as client:
        assert client.describe(MODEL)["customizedMetadata"]["runtime"]["precision"] == "int8"
    assert worker_pid(server.ts) == pid


def worker_rss(server: Server) -> int:
    return psutil.Process(worker_pid(server.ts)).memory_info().rss


def test_a_full_request_is_answered_and_the_memory_is_given_back(server: Server, reliability: ReliabilityRecord):
    pid, before = worker_pid(server.ts), worker_rss(server)
    images = loadtest.distinct_images(MAX_IMAGES_PER_REQUEST, seed=5, size=224)
    response = requests.post(f"{server.ts.inference_url}/v2/models/{MODEL}/infer", json=oip_request(images, "full"),
                             headers=server.headers(), timeout=300)  # fmt: skip
    assert response.status_code == 200, response.text[:300]
    packed = predictions_from_oip(response.json())
    assert len(packed) == MAX_IMAGES_PER_REQUEST
    for image, prediction in list(zip(images, packed, strict=True))[::16]:  # each its own image's answer
        assert prediction.logits == pytest.approx(server.predict(MODEL, image, "image/png").json()["logits"], abs=1e-4)
    refused = send(server, HOSTILE[1], requests.Session())
    check_refusal(HOSTILE[1], refused)
    after = worker_rss(server)
    assert worker_pid(server.ts) == pid
    assert after - before < 400 * 2**20, (before, after)
    reliability.add(
        "hostile",
        f"A request with {MAX_IMAGES_PER_REQUEST} distinct 224-px images (the most one request may carry) was "
        f"answered with {len(packed)} answers, each its own image's; with the 500-image request refused after it, "
        f"the worker's memory went from {before / 2**20:.0f} MB to {after / 2**20:.0f} MB "
        f"({(after - before) / 2**20:+.0f} MB; the budget is 400 MB).",
    )


def test_the_grpc_port_holds_the_same_key_and_budgets(server: Server):
    """TorchServe always opens its gRPC inference port (config.properties binds it to loopback). A request
    there reaches the handler with no endpoint header, so it is read as an Open Inference Protocol body
    whatever its input map holds: the same key and the same budgets as over HTTP, and the worker survives."""
    with channel(grpc_target(server.ts)) as chan:
        grpc_port_answers(server, predictions(chan))


def grpc_port_answers(server: Server, predict: Callable[..., bytes]) -> None:
    pid, key = worker_pid(server.ts), [("authorization", server.headers()["Authorization"])]

    def answer(inputs: dict[str, bytes]) -> dict:
        return json.loads(predict(predictions_request(MODEL, inputs), metadata=key, timeout=120))

    with pytest.raises(grpc.RpcError) as refused:
        predict(predictions_request(MODEL, {"body": json.dumps(oip_request([image_bytes()])).encode()}), timeout=60)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    too_large = predictions_request(MODEL, {"body": b"0" * 40_000_000})  # config.properties: max_request_size 32 MiB
    with pytest.raises(grpc.RpcError) as refused:
        predict(too_large, metadata=key, timeout=60)
    # the frontend resets the stream past max_request_size: the worker never sees it
    assert refused.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
    by_name = {case.name: case for case in HOSTILE}
    crafted = {
        "an image as a native request would carry it": ({"data": image_bytes()}, "not JSON"),
        "JSON nested 100,000 deep": ({"body": by_name["JSON nested 100,000 deep (OIP path)"].body}, "MAX_JSON_DEPTH"),
        "2,000 images": ({"body": by_name["2,000 BYTES images in one request"].body}, "MAX_IMAGES_PER_REQUEST"),
        "300 fields of garbage": ({f"f{i}": bytes([i % 256]) * 64 for i in range(300)}, ""),
    }
    for name, (inputs, says) in crafted.items():
        refusal = answer(inputs)
        assert "error" in refusal and says in refusal["error"], (name, refusal)
    images = loadtest.distinct_images(2, seed=11, size=224)
    answered = predictions_from_oip(answer({"body": json.dumps(oip_request(images)).encode()}))
    for image, prediction in zip(images, answered, strict=True):  # each its own image's answer, as over HTTP
        assert prediction.logits == pytest.approx(server.predict(MODEL, image, "image/png").json()["logits"], abs=1e-4)
    assert worker_pid(server.ts) == pid
