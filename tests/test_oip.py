"""The Open Inference Protocol format and the wire contract, in-process (no TorchServe)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepfake_client.contract
import deepfake_contract
from deepfake_contract import (
    MAX_IMAGE_PIXELS,
    NATIVE,
    OIP,
    ErrorAnswer,
    ModelMetadata,
    Prediction,
    oip_request,
    oip_response,
    predictions_from_oip,
)
from handler.formats import decode_request, encode_answer
from handler.oip import images_from_oip, oip_body
from handler.preprocessing import ImageTooLargeError, InvalidImageError, decode_image
from handler.service import DetectorService
from handler.settings import ModelSettings
from tests.conftest import constant_checkpoint, image_bytes

TIER = "unit"

PIXELS = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4  # distinct values, row-major HWC


def prediction(p: float = 0.75, labels: tuple[str, str] = ("Real", "Fake")) -> Prediction:
    return Prediction(
        label=labels[int(p > 0.5)],
        class_index=int(p > 0.5),
        logits=[0.125, p],
        probabilities={labels[0]: 1 - p, labels[1]: p},
        fake_probability=p,
        softmax_confidence=max(p, 1 - p),
        adjusted_confidence=0.625,
        temperature=1.5,
        alpha=6.0,
    )


def uint8_tensor(pixels: np.ndarray, name: str = "pixels") -> dict:
    return {"name": name, "datatype": "UINT8", "shape": list(pixels.shape), "data": pixels.flatten().tolist()}


def test_labels_keep_their_order_and_names():
    body = oip_response("m", [prediction(0.5, labels=("genuine", "deepfake"))])
    [probabilities] = [o for o in body["outputs"] if o["name"] == "probabilities"]
    assert json.loads(probabilities["parameters"]["labels"]) == ["genuine", "deepfake"]
    assert predictions_from_oip(body)[0].probabilities == {"genuine": 0.5, "deepfake": 0.5}


def test_oip_answer_round_trips_every_prediction_field():
    predictions = [prediction(0.75), prediction(0.125)]
    body = oip_response("deepfake", predictions, request_id="r-1", model_version="1.0")
    assert {o["name"] for o in body["outputs"]} == set(Prediction.field_names())
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in body["outputs"]}
    assert shapes["logits"] == ("FP64", [2, 2]) and shapes["label"] == ("BYTES", [2])
    assert shapes["class_index"] == ("INT64", [2]) and shapes["fake_probability"] == ("FP64", [2])
    assert (body["model_name"], body["model_version"], body["id"]) == ("deepfake", "1.0", "r-1")
    assert predictions_from_oip(json.loads(json.dumps(body))) == predictions  # through JSON, exactly


def test_oip_answer_is_a_valid_kserve_v2_response():
    from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse

    body = oip_response("deepfake", [prediction(0.75), prediction(0.25)], request_id="r-2")
    InferenceResponse.model_validate(body)  # KServe's own schema of an inference response
    InferenceRequest.model_validate(oip_request([image_bytes(), image_bytes(fmt="PNG")], "r-2"))


def test_error_answers_in_both_formats():
    error = ErrorAnswer(413, "ImageTooLarge", "image too large")
    assert error.to_json(NATIVE) == {"code": 413, "type": "ImageTooLarge", "message": "image too large"}
    assert error.to_json(OIP) == {"error": "image too large"}  # the protocol's error object
    assert ErrorAnswer.from_json(error.to_json(OIP), 413) == ErrorAnswer(413, "", "image too large")
    assert ErrorAnswer.from_json(error.to_json(NATIVE), 413) == error


def test_model_metadata_round_trips():
    metadata = ModelMetadata(224, ("Real", "Fake"), "Fake", (0.5,) * 3, (0.5,) * 3, "int8", "resnet18", 1.2, 1.2)
    assert ModelMetadata.from_json(json.loads(json.dumps(metadata.to_json()))) == metadata
    assert metadata.max_image_pixels == MAX_IMAGE_PIXELS and metadata.protocols == (NATIVE, OIP)


def test_bytes_and_uint8_inputs_give_the_images_they_carry():
    jpeg, png = image_bytes(), image_bytes((10, 200, 30), fmt="PNG")
    request = oip_request([jpeg, png])
    request["inputs"].append(uint8_tensor(np.stack([PIXELS, PIXELS[::-1]])))  # [N, H, W, C]
    request["inputs"].append(uint8_tensor(PIXELS[..., :1]))  # gray [H, W, 1]
    images, pixels = images_from_oip(request)
    assert pixels == 2 * 96 * 64 + 3 * PIXELS.shape[0] * PIXELS.shape[1]  # declared: headers and shapes
    assert images[:2] == [jpeg, png]
    np.testing.assert_array_equal(np.asarray(images[2]), PIXELS)
    np.testing.assert_array_equal(np.asarray(images[3]), PIXELS[::-1])
    np.testing.assert_array_equal(np.asarray(images[4]), np.repeat(PIXELS[..., :1], 3, axis=2))
    nested = {"inputs": [{**uint8_tensor(PIXELS), "data": PIXELS.tolist()}]}  # nested data is row-major too
    np.testing.assert_array_equal(np.asarray(images_from_oip(nested)[0][0]), PIXELS)


def test_oip_bodies_are_recognised_however_they_arrive():
    request = oip_request([image_bytes()], "x")
    assert oip_body({"body": request}) == request  # application/json: TorchServe parsed it
    assert oip_body({"body": bytearray(json.dumps(request).encode())}) == request  # sent as bytes
    assert oip_body({"body": bytearray(image_bytes())}) is None  # an image
    assert oip_body({"body": {"image": "aGk="}}) is None  # the native JSON form
    assert oip_body({"body": bytearray(b"{not json")}) is None


@pytest.mark.parametrize(
    ("tensor", "status", "message"),
    [
        ({"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}, 400, "datatype 'FP32'"),
        ({"name": "x", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}, 400, "needs 2 elements"),
        ({"name": "x", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}, 400, "not valid base64"),
        ({"name": "x", "datatype": "BYTES", "shape": [1], "data": [7]}, 400, "base64 strings"),
        ({"name": "x", "datatype": "BYTES", "shape": "1", "data": ["aGk="]}, 400, "shape must be a list"),
        ({"name": "x", "datatype": "UINT8", "shape": [2, 2, 3], "data": [0] * 11}, 400, "needs 12 elements"),
        ({"name": "x", "datatype": "UINT8", "shape": [2, 2, 3], "data": [300] * 12}, 400, "0..255"),
        ({"name": "x", "datatype": "UINT8", "shape": [2, 2, 2], "data": [0] * 8}, 400, "2 channels"),
        ({"name": "x", "datatype": "UINT8", "shape": [6], "data": [0] * 6}, 400, r"need shape \[H, W, C\]"),
        ({"name": "x", "datatype": "UINT8", "shape": [20000, 20000, 3], "data": []}, 413, "too large"),
    ],
)
def test_bad_tensors_are_refused_with_a_specific_error(tensor: dict, status: int, message: str):
    with pytest.raises(InvalidImageError, match=message) as info:
        images_from_oip({"inputs": [tensor]})
    assert info.value.status == status
    assert isinstance(info.value, ImageTooLargeError) == (status == 413)


def test_requests_without_images_are_refused():
    for body in ({"inputs": []}, {"inputs": "x"}, {"inputs": [3]}, {"inputs": [uint8_tensor(PIXELS[:0])]}):
        with pytest.raises(InvalidImageError):
            images_from_oip(body)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> DetectorService:
    weights = tmp_path_factory.mktemp("oip") / "constant.pth"
    torch.save(constant_checkpoint(), weights)
    return DetectorService.from_checkpoint(weights, ModelSettings(mean=(0.5,) * 3, std=(0.5,) * 3))


def answer(service: DetectorService, item: object, protocol_version: str | None = "1.0") -> tuple[int, dict]:
    """What the handler answers for one request item: decode, the core, encode."""
    request = decode_request(item)
    results, _ = service.predict(request.images)
    wire = encode_answer(request, results, "deepfake", protocol_version)
    return wire.status, json.loads(json.dumps(wire.body))


def test_the_same_image_gets_the_same_answer_in_both_formats(service: DetectorService):
    jpeg = image_bytes()
    native_status, native = answer(service, {"body": bytearray(jpeg)})
    oip_status, oip = answer(service, {"body": oip_request([jpeg, jpeg], "id-7")})
    assert native_status == oip_status == 200
    assert set(native) == set(Prediction.field_names())
    assert predictions_from_oip(oip) == [Prediction.from_json(native)] * 2
    assert oip["id"] == "id-7" and oip["model_name"] == "deepfake"
    # pixels as a UINT8 tensor: the same answer as the image they come from, decoded the server's way
    pixels = np.asarray(decode_image(jpeg))
    _, from_pixels = answer(service, {"body": {"inputs": [uint8_tensor(pixels)]}})
    assert predictions_from_oip(from_pixels) == [Prediction.from_json(native)]


def test_one_bad_image_fails_its_oip_request_with_the_protocols_error(service: DetectorService):
    broken = base64.b64encode(b"not an image").decode()
    request = oip_request([image_bytes()])
    request["inputs"][0]["data"].append(broken)
    request["inputs"][0]["shape"] = [2]
    status, body = answer(service, {"body": request})
    assert status == 400
    assert set(body) == {"error"} and body["error"].startswith("image 1 of 2: not a recognised image format")
    status, body = answer(service, {"body": {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [1]}]}})
    assert status == 400 and "datatype 'FP16'" in body["error"]


def test_a_pixel_array_image_reaches_the_model_as_an_image(service: DetectorService):
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, format="PNG")
    [from_png], _ = service.predict([buffer.getvalue()])
    [from_pixels], _ = service.predict([Image.fromarray(PIXELS)])
    assert from_png == from_pixels


@pytest.mark.slow  # builds two wheels
def test_server_and_client_share_one_contract_package(tmp_path):
    """One module object: a client answer is an instance of the handler's class; the client's wheel
    depends on deepfake-contract instead of carrying a copy (the archive's copy: test_server.py)."""
    from handler import formats

    repo = Path(__file__).resolve().parents[1]
    assert deepfake_client.contract.Prediction is deepfake_contract.Prediction is formats.Prediction
    assert Path(deepfake_contract.__file__).resolve() == repo / "contract" / "deepfake_contract" / "__init__.py"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*command, str(repo / "client"), str(repo / "contract")], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    [client_wheel] = tmp_path.glob("deepfake_client-*.whl")
    [contract_wheel] = tmp_path.glob("deepfake_contract-*.whl")
    with zipfile.ZipFile(client_wheel) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith("METADATA"))
        assert "Requires-Dist: deepfake-contract" in wheel.read(metadata).decode()
        assert "deepfake_client/contract.py" in wheel.namelist()  # the re-export, not a copy
    with zipfile.ZipFile(contract_wheel) as wheel:
        assert wheel.read("deepfake_contract/__init__.py") == Path(deepfake_contract.__file__).read_bytes()


def test_each_wire_format_carries_images_from_the_client_to_the_core_and_answers_back(service: DetectorService):
    """The contract's WireFormat per protocol, both sides: the client's request body, read by the handler's
    reader for that protocol, answered in that format and parsed back by the client's side of it."""
    from deepfake_contract import WIRE_FORMATS, ErrorAnswer, wire_format

    images = [image_bytes((10, 200, 30)), image_bytes((200, 10, 30))]
    for protocol, wire in WIRE_FORMATS.items():
        sent = images[: wire.max_images]
        kwargs = wire.request(sent)
        body = kwargs["data"] if "data" in kwargs else json.dumps(kwargs["json"]).encode()
        request = decode_request({"body": bytearray(body)}, {"body": None}, protocol)
        assert request.error is None and request.protocol == protocol
        results, _ = service.predict(request.images)
        answered = encode_answer(request, results, "deepfake", None)
        assert wire.predictions(json.loads(answered.text)) == results and len(results) == len(sent)
        assert wire.infer_path("m").endswith("m/infer") or wire.infer_path("m") == "/predictions/m"
        refused = ErrorAnswer(400, "InvalidImage", "no")
        assert refused.to_json(protocol) == wire.error_body(refused)
    assert wire_format("oip").ready_path("m") == "/v2/models/m/ready" and wire_format("native").ready_path("m") is None
    with pytest.raises(deepfake_contract.ContractError, match="protocol must be one of native, oip"):
        wire_format("grpc")
