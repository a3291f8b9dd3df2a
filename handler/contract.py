"""The wire contract between the server and its clients, declared once.

The handler fills these types and the client parses them. This file is packed in every archive
(``handler/``) and ships in the client package as ``deepfake_client/contract.py``, a link to this
one, so the two sides cannot drift. Standard library only: it runs in TorchServe's worker, in the
client and in any tooling that speaks the Open Inference Protocol (OIP, KServe v2).

Two wire formats carry the same answer:

* ``native``: ``POST /predictions/<model>`` with image bytes; the answer is ``Prediction.to_json()``,
  an error is ``ErrorAnswer.to_json()``.
* ``oip``: ``POST /v2/models/<model>/infer`` with ``oip_request()``: images as a ``BYTES`` tensor
  (base64 in JSON) or a ``UINT8`` tensor of shape [H, W, C] or [N, H, W, C]. The answer has one
  output tensor per ``Prediction`` field, first dimension = images; an error is ``{"error": message}``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

NATIVE = "native"
OIP = "oip"
PROTOCOLS = (NATIVE, OIP)

# The largest image the server decodes, in pixels (a 61 MP photo and an 8K frame pass; a decompression
# bomb does not). The client checks video frames against it before sending them.
MAX_IMAGE_PIXELS = 64_000_000

OIP_IMAGE_INPUT = "image"  # the input tensor name oip_request() uses (the server accepts any name)
OIP_DATATYPES = ("BYTES", "UINT8")  # what the server accepts as images


def _tensor(datatype: str, item_shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """How a Prediction field travels as an OIP output tensor: datatype, shape after the image axis."""
    return {"oip": (datatype, item_shape)}


JSON_IN_BYTES = {"oip": ("BYTES", ()), "json": True}  # a structured field: one JSON text per image


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: what the handler sends and the client parses, in both formats."""

    label: str = field(metadata=_tensor("BYTES"))
    class_index: int = field(metadata=_tensor("INT64"))
    logits: list[float] = field(metadata=_tensor("FP64", (2,)))
    # OIP: one row per image, in the order of the JSON list in the tensor's parameters["labels"]
    probabilities: dict[str, float] = field(metadata=_tensor("FP64", (2,)))
    fake_probability: float = field(metadata=_tensor("FP64"))
    softmax_confidence: float = field(metadata=_tensor("FP64"))  # top probability of softmax(logits / T)
    adjusted_confidence: float = field(metadata=_tensor("FP64"))  # the original app's sigmoid(|margin| / alpha)
    temperature: float = field(metadata=_tensor("FP64"))
    alpha: float = field(metadata=_tensor("FP64"))
    # Face-crop archives (crop: face): every face classified, the fields above being the most fake
    # face's answer. None for archives that classify the whole image.
    faces: list[FaceAnswer] | None = field(default=None, metadata=JSON_IN_BYTES)

    @property
    def is_fake(self) -> bool:
        return self.fake_probability > 0.5

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        """Parse a native answer; KeyError names a missing field (extra fields are ignored; ``faces`` may
        be missing, from a server older than face mode)."""
        values = {name: data[name] for name in cls.field_names() if name != "faces"}
        faces = data.get("faces")
        return cls(**values, faces=None if faces is None else [FaceAnswer.from_json(face) for face in faces])

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "faces"}
        data["logits"], data["probabilities"] = list(self.logits), dict(self.probabilities)  # copies
        data["faces"] = None if self.faces is None else [face.to_json() for face in self.faces]
        return data


@dataclass(frozen=True)
class FaceAnswer:
    """One face of a face-crop answer: where it is, how sure the detector is, the classifier's answer."""

    box: list[float]  # [x1, y1, x2, y2] in the uploaded image's pixels: the detector's box, before the margin
    score: float  # the detector's probability that this is a face
    prediction: Prediction

    def to_json(self) -> dict[str, Any]:
        answer = self.prediction.to_json()
        answer.pop("faces")
        return {"box": list(self.box), "score": self.score, "prediction": answer}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaceAnswer:
        return cls(list(data["box"]), float(data["score"]), Prediction.from_json(data["prediction"]))


# A face-crop archive's answer for an image without a face: a defined answer, not a verdict. OIP's error
# body has no type, so there the status alone tells it.
NO_FACE_STATUS = 422
NO_FACE_TYPE = "NoFace"


def is_no_face(status: int | None, error_type: str | None) -> bool:
    return status == NO_FACE_STATUS and error_type in (NO_FACE_TYPE, "")


@dataclass(frozen=True)
class ErrorAnswer:
    """A refused request: its HTTP status, a machine-readable type and a one-line message."""

    code: int
    type: str
    message: str

    def to_json(self, protocol: str = NATIVE) -> dict[str, Any]:
        """The error body of ``protocol``: native ``{code, type, message}``, OIP ``{"error": message}``."""
        if protocol == OIP:
            return {"error": self.message}
        return {"code": self.code, "type": self.type, "message": self.message}

    @property
    def is_no_face(self) -> bool:
        return is_no_face(self.code, self.type)

    @classmethod
    def from_json(cls, data: Any, status: int) -> ErrorAnswer:
        """Parse either format's error body (anything else: an empty type, the text as message)."""
        if isinstance(data, Mapping):
            message = data.get("message", data.get("error"))
            if message is not None:
                return cls(int(data.get("code", status)), str(data.get("type", "")), str(message))
        return cls(status, "", "" if data is None else str(data))


@dataclass(frozen=True)
class ModelMetadata:
    """What a client needs to know about a served model; the handler builds it from the archive's settings
    and publishes it in the management API's ``customizedMetadata["metadata"]``."""

    input_size: int  # frames resized to input_size x input_size travel small and decode exactly
    labels: tuple[str, ...]
    fake_label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str  # fp32 | bf16 | int8: the runtime mode the archive was built for
    arch: str
    temperature: float
    alpha: float
    max_image_pixels: int = MAX_IMAGE_PIXELS
    protocols: tuple[str, ...] = PROTOCOLS
    crop: str = "full"  # "face": the server finds faces itself, so frames must keep their full resolution

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMetadata:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for name in ("labels", "mean", "std", "protocols"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


# --- Open Inference Protocol ----------------------------------------------------------------------
def oip_request(images: Sequence[bytes], request_id: str | None = None) -> dict[str, Any]:
    """An OIP inference request for encoded images (JPEG, PNG, ...): one BYTES tensor, base64 in JSON."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": OIP_IMAGE_INPUT,
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(image).decode("ascii") for image in images],
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def _flatten(values: list[Any]) -> list[Any]:
    return [x for row in values for x in row] if values and isinstance(values[0], list) else values


def oip_outputs(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """One output tensor per Prediction field, the first dimension indexing the images."""
    outputs = []
    for spec in fields(Prediction):
        datatype, item_shape = spec.metadata["oip"]
        values = [getattr(p, spec.name) for p in predictions]
        tensor: dict[str, Any] = {"name": spec.name, "datatype": datatype, "shape": [len(values), *item_shape]}
        if spec.metadata.get("json"):  # faces: one JSON text per image
            values = [json.dumps(None if v is None else [face.to_json() for face in v]) for v in values]
        if spec.name == "probabilities":
            labels = list(values[0]) if values else []
            tensor["parameters"] = {"labels": json.dumps(labels)}
            values = [[row[label] for label in labels] for row in values]
        tensor["data"] = _flatten(values)
        outputs.append(tensor)
    return outputs


def oip_response(
    model_name: str, predictions: Sequence[Prediction], request_id: str | None = None, model_version: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        body["model_version"] = model_version
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = oip_outputs(predictions)
    return body


def predictions_from_oip(response: Mapping[str, Any]) -> list[Prediction]:
    """Parse an OIP answer back into one Prediction per image; KeyError/ValueError when it does not fit."""
    tensors = {output["name"]: output for output in response["outputs"]}
    count = int(tensors["label"]["shape"][0])
    columns: dict[str, list[Any]] = {}
    for spec in fields(Prediction):
        if spec.name == "faces" and "faces" not in tensors:  # a server older than face mode
            continue
        tensor = tensors[spec.name]
        _, item_shape = spec.metadata["oip"]
        width = math.prod(item_shape)
        data = list(tensor["data"])
        if len(data) != count * width:
            raise ValueError(f"output {spec.name!r} has {len(data)} values for {count} images")
        rows = [data[i * width : (i + 1) * width] for i in range(count)] if item_shape else data
        if spec.name == "probabilities":
            labels = json.loads(tensor["parameters"]["labels"])
            rows = [dict(zip(labels, row, strict=True)) for row in rows]
        if spec.metadata.get("json"):
            rows = [json.loads(row) for row in rows]
        columns[spec.name] = rows
    return [Prediction.from_json({name: column[i] for name, column in columns.items()}) for i in range(count)]
