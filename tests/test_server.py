"""Against a real TorchServe on free loopback ports, serving archives built from saved checkpoints."""

from __future__ import annotations

import base64
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch

from handler.checkpoint import load_model
from handler.preprocessing import decode_image, to_model_input
from handler.runtimes import available_cores, cpu_capabilities, plan_precision
from scripts.bench.loadtest import distinct_images
from scripts.operations.archives import DEFAULT_FACE_WORKERS, DEFAULT_MAX_BATCH_DELAY_MS, DEFAULT_WORKERS
from tests.conftest import CONSTANT_LOGITS, SERVED_MODELS, ServedModel, Server, archive_service, image_bytes

TIER = "integration"

IMAGES = {
    "jpeg": image_bytes((180, 40, 90), (96, 64), "JPEG"),
    "png": image_bytes((20, 140, 220), (300, 200), "PNG"),
}


def reference_logits(served: ServedModel, payload: bytes) -> list[float]:
    """The in-process computation: the archive's own artefacts and runtime, the same preprocessing."""
    service = archive_service(served.archive)
    return service.logits(service.decode(payload).unsqueeze(0))[0].tolist()


@functools.cache
def torch_reference_logits(weights: Path, mean: tuple, std: tuple, payload: bytes) -> list[float]:
    """The checkpoint in plain torch fp32, NCHW: what every mode is an approximation of."""
    model = load_model(weights)[0]
    with torch.inference_mode():
        return model(to_model_input(decode_image(payload), mean, std).unsqueeze(0))[0].tolist()


# the whole-image archives (the face-crop one has its own in test_faces_server.py)
@pytest.mark.parametrize("model", [m for m in SERVED_MODELS if m not in ("constant", "faces")])
def test_served_logits_equal_the_in_process_reference(server: Server, model: str):
    served = server.models[model]
    for payload in IMAGES.values():
        response = server.predict(model, payload)
        assert response.status_code == 200, response.text
        assert response.json()["logits"] == pytest.approx(reference_logits(served, payload), abs=1e-4)
        if served.settings.precision == "fp32":  # OpenVINO fp32 is the checkpoint's own arithmetic
            expected = torch_reference_logits(served.weights, served.settings.mean, served.settings.std, payload)
            assert response.json()["logits"] == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_each_archive_runs_the_mode_it_was_built_for(server: Server):
    for name, (_, _, precision) in SERVED_MODELS.items():
        response = requests.get(
            f"{server.ts.management_url}/models/{name}?customized=true",
            headers=server.headers("management"),
            timeout=60,
        )
        [entry] = response.json()
        runtime = entry["customizedMetadata"]["runtime"]
        threads = runtime.pop("threads")
        assert runtime.pop("frames_decoded_on") == "cpu"  # no GPU here: every image is decoded on the CPU
        requested = precision or server.models[name].settings.precision
        ran, fallback = plan_precision(requested, cpu_capabilities())  # bf16 runs as fp32 on a CPU without BF16
        expected = {"engine": "openvino", "precision": ran, "requested": requested, "device": "cpu"}
        assert runtime == (expected if fallback is None else {**expected, "fallback": fallback})
        workers = len(entry["workers"])
        assert workers == (DEFAULT_FACE_WORKERS if name == "faces" else DEFAULT_WORKERS)  # the crop mode's default
        if workers > 1:  # the workers share the cores instead of each taking all of them
            assert threads == max(1, available_cores() // workers)
    report = server.models["deepfake"].settings.extra["precision_report"]
    measured = report["agreement"]["int8"]  # named, so kept; checked against fp32 and recorded
    assert report["chosen"] == "int8" and report["explicit"] and measured["label_agreement"] >= 0.99
    # a random ResNet gives nearly every image one class: agreement is then not claimed (test_runtimes.py)
    assert not (measured["passes"] and measured["degenerate"])


def test_constant_model_answer_is_exact(server: Server):
    answer = server.predict("constant", IMAGES["png"], "image/png").json()
    margin = CONSTANT_LOGITS[1] - CONSTANT_LOGITS[0]
    p_fake = 1 / (1 + math.exp(-margin / 2.0))  # temperature 2.0 in the archive
    assert answer["label"] == "Fake" and answer["class_index"] == 1
    assert answer["logits"] == pytest.approx(list(CONSTANT_LOGITS), abs=1e-6)
    assert answer["probabilities"] == pytest.approx({"Real": 1 - p_fake, "Fake": p_fake}, abs=1e-6)
    assert answer["softmax_confidence"] == pytest.approx(p_fake, abs=1e-6)
    assert answer["adjusted_confidence"] == pytest.approx(1 / (1 + math.exp(-margin / 3.0)), abs=1e-6)
    assert (answer["temperature"], answer["alpha"]) == (2.0, 3.0)


def test_multipart_and_base64_json_bodies(server: Server):
    expected = server.predict("deepfake", IMAGES["jpeg"]).json()["logits"]
    url = f"{server.ts.inference_url}/predictions/deepfake"
    multipart = requests.post(
        url, files={"file": ("a.jpg", IMAGES["jpeg"], "image/jpeg")}, headers=server.headers(), timeout=60
    )
    as_json = requests.post(
        url, json={"image": base64.b64encode(IMAGES["jpeg"]).decode()}, headers=server.headers(), timeout=60
    )
    assert multipart.status_code == as_json.status_code == 200
    assert multipart.json()["logits"] == pytest.approx(expected, abs=1e-6)
    assert as_json.json()["logits"] == pytest.approx(expected, abs=1e-6)


def send_concurrently(server: Server, payloads: list[bytes]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(lambda p: server.predict("deepfake", p), payloads))


def test_concurrent_requests_are_served_in_batches(server: Server):
    """16 different images at once: batched, and each answer is its own image's."""
    payloads = distinct_images(16, seed=3)
    expected = [reference_logits(server.models["deepfake"], p) for p in payloads]
    responses = send_concurrently(server, payloads)
    assert [r.status_code for r in responses] == [200] * 16
    for response, logits in zip(responses, expected, strict=True):
        assert response.json()["logits"] == pytest.approx(logits, abs=1e-4)
    ids = {r.headers["x-request-id"] for r in responses}
    batches = server.batches_of(ids)
    assert set().union(*batches) == ids  # every request accounted for, each in one batch
    assert sum(len(b) for b in batches) == 16
    assert max(len(b) for b in batches) > 1, f"batch sizes {[len(b) for b in batches]}"
    assert max(len(b) for b in batches) <= 8  # the archive's batchSize


def test_a_corrupt_image_fails_alone_inside_a_batch(server: Server):
    good = distinct_images(7, seed=5)
    expected = [reference_logits(server.models["deepfake"], p) for p in good]
    for _attempt in range(5):  # until the corrupt request shares a batch (first try, in practice)
        payloads = [*good[:3], b"\xff\xd8\xff\xe0 not really a jpeg", *good[3:]]
        responses = send_concurrently(server, payloads)
        bad = responses[3]
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/json")
        assert bad.json()["type"] == "InvalidImage"
        assert "cannot decode image" in bad.json()["message"] or "not a recognised" in bad.json()["message"]
        for response, logits in zip(responses[:3] + responses[4:], expected, strict=True):
            assert response.status_code == 200
            assert response.json()["logits"] == pytest.approx(logits, abs=1e-4)
        ids = {r.headers["x-request-id"] for r in responses}
        shared = [b for b in server.batches_of(ids) if bad.headers["x-request-id"] in b]
        if shared and len(shared[0]) > 1:
            return
    pytest.fail("the corrupt request never shared a batch with good ones")


def test_requests_without_a_valid_token_are_refused(server: Server):
    url = f"{server.ts.inference_url}/predictions/deepfake"
    for headers in ({}, {"Authorization": "Bearer wrong"}, server.headers("management")):
        response = requests.post(
            url, data=IMAGES["jpeg"], headers={**headers, "Content-Type": "image/jpeg"}, timeout=30
        )
        assert response.status_code == 400
        assert response.json()["type"] == "InvalidKeyException"
    for path in ("/models", "/models/deepfake"):
        response = requests.get(server.ts.management_url + path, headers=server.headers("inference"), timeout=30)
        assert response.status_code == 400
    assert requests.get(f"{server.ts.inference_url}/ping", timeout=30).status_code == 400


def test_describe_shows_the_archive_settings(server: Server):
    response = requests.get(
        f"{server.ts.management_url}/models/r34_half?customized=true", headers=server.headers("management"), timeout=60
    )
    [entry] = response.json()
    assert entry["batchSize"] == 8 and entry["maxBatchDelay"] == DEFAULT_MAX_BATCH_DELAY_MS
    assert entry["customizedMetadata"]["settings"]["arch"] == "resnet34"
    assert entry["customizedMetadata"]["settings"]["mean"] == [0.5, 0.5, 0.5]


def test_every_archive_carries_the_contract_package_the_client_uses(server: Server):
    """make mar packs deepfake_contract beside the handler, byte for byte what the client imports."""
    import zipfile

    import deepfake_contract

    source = Path(deepfake_contract.__file__).read_bytes()
    for name, model in server.models.items():
        with zipfile.ZipFile(model.archive) as archive:
            assert archive.read("deepfake_contract/__init__.py") == source, name
            assert "handler/contract.py" not in archive.namelist()  # one contract, not two
