"""The explanations API served: heatmaps from TorchServe match the model core's, per image and per face,
explanation requests batched with predictions never mix answers, and the CLI writes overlays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from deepfake_client import DeepfakeClient, Explanation, Prediction
from deepfake_contract import EXPLANATION_METHOD
from scripts.bench.loadtest import distinct_images
from tests.conftest import Server, archive_service, cli
from tests.faces import ASTRONAUT_FACE, CAMERA_FACE, pasted, photo, png_bytes, shifted
from tests.media import constant_rate, write_video

TIER = "integration"


def explain(server: Server, model: str, payload: bytes) -> requests.Response:
    headers = {**server.headers(), "Content-Type": "application/octet-stream"}
    return requests.post(f"{server.ts.inference_url}/explanations/{model}", data=payload, headers=headers, timeout=120)


def test_a_served_explanation_is_the_model_cores_from_the_fp32_weights(server: Server):
    """The int8 archive predicts with its int8 graph, and explains with its fp32 weights."""
    payload = distinct_images(1, seed=41, size=160)[0]
    response = explain(server, "deepfake", payload)
    assert response.status_code == 200, response.text
    served = Explanation.from_json(response.json())
    reference = archive_service(server.models["deepfake"].archive).explain(payload)
    assert (served.method, served.layer, served.target) == (EXPLANATION_METHOD, "layer3", "Fake")
    assert len(served.heatmaps) == 1 and served.heatmaps[0].region == [0.0, 0.0, 160.0, 160.0]
    assert np.asarray(served.heatmaps[0].values).shape == (14, 14)
    assert np.asarray(served.heatmaps[0].values) == pytest.approx(np.asarray(reference.heatmaps[0].values), abs=2e-3)
    assert max(max(row) for row in served.heatmaps[0].values) == pytest.approx(1.0)
    assert served.prediction.logits == pytest.approx(reference.prediction.logits, abs=1e-4)
    predicted = Prediction.from_json(server.predict("deepfake", payload, "image/png").json())
    assert served.prediction.logits == pytest.approx(predicted.logits, abs=1e-4)  # the served prediction


def test_explanations_batched_with_predictions_answer_each_request_its_own(server: Server):
    """TorchServe puts explanation and prediction requests in one batch: each gets its own kind of answer."""
    images = distinct_images(8, seed=43)
    service = archive_service(server.models["deepfake"].archive)
    expected = [service.logits(service.decode(image).unsqueeze(0))[0].tolist() for image in images]
    kinds = ["explain" if i in (2, 5) else "predict" for i in range(len(images))]

    def send(i: int) -> requests.Response:
        if kinds[i] == "explain":
            return explain(server, "deepfake", images[i])
        return server.predict("deepfake", images[i], "image/png")

    for _attempt in range(5):  # until TorchServe batches an explanation with predictions
        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            responses = list(pool.map(send, range(len(images))))
        for i, response in enumerate(responses):
            assert response.status_code == 200, response.text
            body = response.json()
            prediction = Explanation.from_json(body).prediction if kinds[i] == "explain" else Prediction.from_json(body)
            assert prediction.logits == pytest.approx(expected[i], abs=1e-4)
            assert ("heatmaps" in body) == (kinds[i] == "explain")
        ids = [response.headers["x-request-id"] for response in responses]  # TorchServe's job ids
        explained = {ids[i] for i in range(len(images)) if kinds[i] == "explain"}
        batches = server.batches_of(set(ids))
        if any(b & explained and b - explained for b in batches):
            break
    else:
        pytest.fail(f"no explanation was batched with a prediction: {batches}")


def test_face_mode_explains_every_face_in_its_own_crop(server: Server):
    frame = pasted((1280, 720), (photo("astronaut"), (0, 100)), (photo("camera"), (700, 150)))
    response = explain(server, "faces", png_bytes(frame))
    assert response.status_code == 200, response.text
    served = Explanation.from_json(response.json())
    heatmaps = sorted(served.heatmaps, key=lambda h: h.region[0])
    assert len(heatmaps) == 2 and all(h.box is not None for h in heatmaps)
    faces = (shifted(ASTRONAUT_FACE, (0, 100)), shifted(CAMERA_FACE, (700, 150)))
    for heatmap, face in zip(heatmaps, faces, strict=True):
        left, top, right, bottom = heatmap.region
        assert left <= face[0] and top <= face[1] and right >= face[2] and bottom >= face[3]  # the crop holds the face
    assert served.prediction.faces is not None and len(served.prediction.faces) == 2
    no_face = explain(server, "faces", png_bytes(photo("coffee")))
    assert no_face.status_code == 422 and no_face.json()["type"] == "NoFace"


def test_a_bad_image_to_explain_is_a_clear_400(server: Server):
    response = explain(server, "deepfake", b"not an image at all")
    assert response.status_code == 400 and response.json()["type"] == "InvalidImage"


def test_the_client_and_cli_write_overlays(server: Server, tmp_path: Path):
    image_path = tmp_path / "scene.png"
    image_path.write_bytes(distinct_images(1, seed=47, size=200)[0])
    with DeepfakeClient(base_url=server.ts.inference_url, key_file=server.ts.key_file) as client:
        explanation = client.explain(image_path)
    assert explanation.prediction.logits == pytest.approx(
        archive_service(server.models["deepfake"].archive).explain(image_path.read_bytes()).prediction.logits, abs=1e-4
    )
    out = tmp_path / "why"
    done = cli(server.ts, "image", str(image_path), "--explain", str(out))
    assert done.returncode == 0, done.stderr
    written = out / "scene.explain.png"
    assert f"Explanation of {image_path}: {written}" in done.stdout
    with Image.open(written) as overlay, Image.open(image_path) as original:
        assert overlay.size == original.size
        assert np.abs(np.asarray(overlay, dtype=int) - np.asarray(original.convert("RGB"), dtype=int)).max() > 20

    video = write_video(tmp_path / "clip.mp4", constant_rate(30, Fraction(10)), size=(320, 240))
    done = cli(server.ts, "video", str(video), "--explain-top", "2", str(out))
    assert done.returncode == 0, done.stderr
    frames = sorted(out.glob("clip_*.explain.png"))
    assert len(frames) == 2 and all(Image.open(f).size == (320, 240) for f in frames)
    assert done.stdout.count("Explanation:") == 2
    bad = cli(server.ts, "video", str(video), "--explain-top", "two", str(out))
    assert bad.returncode == 2 and "K must be a whole number" in bad.stderr
