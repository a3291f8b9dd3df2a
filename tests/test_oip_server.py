"""The Open Inference Protocol, the wire contract and the deepfake_* metrics against the real TorchServe."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from deepfake_client import DeepfakeClient, InputRejectedError
from deepfake_client.contract import ModelCard, ModelMetadata, Prediction, oip_request, predictions_from_oip
from handler.preprocessing import decode_image
from handler.telemetry import DECLARED
from scripts.bench.loadtest import distinct_images
from tests.conftest import CONSTANT_LOGITS, CONSTANT_SETTINGS, Server, archive_service, cli, image_bytes

TIER = "integration"


def infer(server: Server, body: dict | bytes, model: str = "deepfake", **headers: str) -> requests.Response:
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    return requests.post(
        f"{server.ts.inference_url}/v2/models/{model}/infer",
        headers={**server.headers(), **headers},
        timeout=120,
        **kwargs,
    )


def reference(server: Server, image: bytes | Image.Image, model: str = "deepfake") -> list[float]:
    service = archive_service(server.models[model].archive)
    return service.logits(service.decode(image).unsqueeze(0))[0].tolist()


def test_concurrent_oip_requests_are_batched_and_each_answered_for_its_own_image(server: Server):
    images = distinct_images(8, seed=21)
    expected = [reference(server, image) for image in images]
    bodies = [oip_request([image], f"frame-{i}") for i, image in enumerate(images)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda body: infer(server, body), bodies))
    assert [r.status_code for r in responses] == [200] * 8
    for i, (response, logits) in enumerate(zip(responses, expected, strict=True)):
        body = response.json()
        assert (body["model_name"], body["id"]) == ("deepfake", f"frame-{i}")
        [prediction] = predictions_from_oip(body)
        assert prediction.logits == pytest.approx(logits, abs=1e-4)
    ids = {r.headers["x-request-id"] for r in responses}
    batches = server.batches_of(ids)
    assert sum(len(b) for b in batches) == 8
    assert max(len(b) for b in batches) > 1, f"batch sizes {[len(b) for b in batches]}"


def test_one_oip_request_may_carry_several_images_as_bytes_and_pixels(server: Server):
    images = distinct_images(3, seed=22)
    pixels = np.asarray(decode_image(images[0]))
    body = oip_request(images, "several")
    body["inputs"].append(
        {"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape), "data": pixels.flatten().tolist()}
    )
    response = infer(server, body)
    assert response.status_code == 200, response.text
    predictions = predictions_from_oip(response.json())
    assert len(predictions) == 4
    for prediction, image in zip(predictions, [*images, Image.fromarray(pixels)], strict=True):
        assert prediction.logits == pytest.approx(reference(server, image), abs=1e-4)
    # sent with a non-JSON content type, the body is still read as OIP
    raw = infer(server, json.dumps(oip_request(images[:1])).encode(), **{"Content-Type": "application/octet-stream"})
    assert predictions_from_oip(raw.json())[0] == predictions[0]


@pytest.mark.parametrize(
    ("inputs", "status", "message"),
    [
        ([{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.5, 0.5, 0.5]}], 400, "datatype 'FP32'"),
        ([{"name": "x", "datatype": "UINT8", "shape": [2, 2, 3], "data": [1, 2]}], 400, "needs 12 elements"),
        ([{"name": "x", "datatype": "UINT8", "shape": [9000, 9000, 3], "data": []}], 413, "image too large"),
        ([{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["bm90IGFuIGltYWdl"]}], 400, "not a recognised"),
        ([], 400, "without inputs"),
    ],
)
def test_a_bad_tensor_gets_a_4xx_in_the_protocols_error_form(server: Server, inputs: list, status: int, message: str):
    response = infer(server, {"id": "bad", "inputs": inputs})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error"} and message in response.json()["error"]


def test_a_bad_oip_request_fails_alone_inside_a_batch(server: Server):
    images = distinct_images(7, seed=23)
    expected = [reference(server, image) for image in images]
    bad = {"id": "bad", "inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]}
    bodies = [*[oip_request([image]) for image in images[:3]], bad, *[oip_request([image]) for image in images[3:]]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda body: infer(server, body), bodies))
    assert responses[3].status_code == 400
    good = responses[:3] + responses[4:]
    for response, logits in zip(good, expected, strict=True):
        assert predictions_from_oip(response.json())[0].logits == pytest.approx(logits, abs=1e-4)


def test_server_answers_and_client_types_agree_in_both_formats(server: Server):
    image = image_bytes((30, 90, 200), (120, 80))
    native = server.predict("deepfake", image).json()
    oip = infer(server, oip_request([image])).json()
    assert set(native) == set(Prediction.field_names())  # nothing missing, nothing undeclared
    assert [o["name"] for o in oip["outputs"]] == list(Prediction.field_names())
    assert predictions_from_oip(oip) == [Prediction.from_json(native)]
    # the library parses the same types from both, and the model metadata from the management API
    config = server.ts.client_config()
    with DeepfakeClient(config) as native_client, DeepfakeClient(config, protocol="oip") as oip_client:
        assert native_client.predict_image(image) == oip_client.predict_image(image) == Prediction.from_json(native)
        metadata = oip_client.metadata("r34_half")
        with pytest.raises(InputRejectedError, match="not a recognised image format") as info:
            oip_client.predict_image(b"not an image")
        assert info.value.status == 400
    settings = server.models["r34_half"].settings
    assert metadata.card.classes == settings.labels and metadata.card.trained_on == "unknown"  # no card file given
    assert dataclasses.replace(metadata, card=ModelCard()) == ModelMetadata(
        input_size=224, labels=settings.labels, fake_label=settings.fake_label, mean=settings.mean, std=settings.std,
        precision="fp32", arch="resnet34", temperature=settings.temperature, alpha=settings.alpha,
    )  # fmt: skip


def test_cli_gives_the_same_verdicts_over_oip(server: Server, tmp_path: Path):
    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        path.write_bytes(distinct_images(3, seed=24)[i])
    native = cli(server.ts, "image", "--json", *map(str, images))
    oip = cli(server.ts, "image", "--json", "--protocol", "oip", *map(str, images))
    assert native.returncode == oip.returncode == 0, oip.stderr
    assert json.loads(native.stdout) == json.loads(oip.stdout)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    refused = cli(server.ts, "image", "--protocol", "oip", str(broken))
    assert refused.returncode == 2 and "not a recognised image format" in refused.stderr  # errors on stderr


# --- metrics ------------------------------------------------------------------------------------------
def scrape(server: Server, model: str) -> dict[tuple[str, tuple], float]:
    """Every deepfake_* sample of ``model`` on /metrics: (name, labels without Hostname) -> value."""
    text = requests.get(f"{server.ts.metrics_url}/metrics", timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "Hostname"}
            if sample.name.startswith("deepfake_") and labels.pop("model_name", None) == model:
                samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def increase(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_deepfake_metrics_count_known_traffic(server: Server):
    """The constant model answers every image with the same probability: exact expected counts."""
    p_fake = 1 / (1 + np.exp(-(CONSTANT_LOGITS[1] - CONSTANT_LOGITS[0]) / CONSTANT_SETTINGS["temperature"]))
    before = scrape(server, "constant")
    images = distinct_images(12, seed=25)
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda image: server.predict("constant", image), images))
    bad = [server.predict("constant", b"junk") for _ in range(2)]
    oip = infer(server, oip_request(images[:3]), model="constant")  # 3 more images in one request
    assert [r.status_code for r in [*responses, oip]] == [200] * 13 and [r.status_code for r in bad] == [400] * 2
    ids = {r.headers["x-request-id"] for r in responses + bad + [oip]}
    batches = len(server.batches_of(ids, model="constant"))
    deadline = time.monotonic() + 30
    while True:  # the worker's metric lines reach the frontend asynchronously
        after = scrape(server, "constant")
        if increase(before, after, "deepfake_predictions_total", label="Fake") >= 15 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling interval, bounded by the deadline
    assert increase(before, after, "deepfake_predictions_total", label="Fake") == 15
    assert increase(before, after, "deepfake_predictions_total", label="Real") == 0
    assert increase(before, after, "deepfake_rejected_images_total", error_type="InvalidImage") == 2
    assert increase(before, after, "deepfake_fake_probability_count") == 15
    assert increase(before, after, "deepfake_fake_probability_sum") == pytest.approx(15 * p_fake, abs=1e-6)
    assert increase(before, after, "deepfake_fake_probability_bucket", le="0.75") == 15  # p = 0.679
    assert increase(before, after, "deepfake_fake_probability_bucket", le="0.5") == 0
    assert increase(before, after, "deepfake_batch_size_sum") == 15  # images through the model
    # a batch of only refused images runs no forward pass, so it reports no size
    assert 1 <= increase(before, after, "deepfake_batch_size_count") <= batches
    assert 0 < increase(before, after, "deepfake_preprocess_seconds_total") < 60  # seconds, not milliseconds
    assert 0 < increase(before, after, "deepfake_inference_seconds_total") < 60
    text = requests.get(f"{server.ts.metrics_url}/metrics", timeout=30).text  # the names as exposed, verbatim
    assert re.search(r'^deepfake_predictions_total\{model_name="constant",label="Fake",', text, re.MULTILINE)
    assert re.search(r'^HandlerTime\{ModelName="constant",', text, re.MULTILINE)  # TorchServe's own, from handle()
    counters = {n for n, (kind, *_) in DECLARED.items() if kind == "COUNTER"}
    assert all(n.endswith("_total") for n in counters) and {name for name, _ in after} >= counters
