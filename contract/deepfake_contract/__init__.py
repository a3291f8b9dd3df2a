"""The wire contract between the server and its clients, declared once.

The handler fills these types and the client parses them. One package (``deepfake-contract``), one
module object per process: ``make mar`` packs it in every archive beside ``handler/``, the client
depends on it (``deepfake_client.contract`` re-exports it), so the two sides cannot drift and an
answer parsed by one is an instance of the other's class. Standard library only: it runs in
TorchServe's worker, in the client and in any tooling that speaks the Open Inference Protocol (OIP,
KServe v2).

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

# --- Defaults and rules both sides use, defined once ---------------------------------------------------
DEFAULT_MODEL = "deepfake"  # the archive's name: /predictions/deepfake, model_store/deepfake.mar
DEFAULT_INFERENCE_PORT = 8080  # TorchServe's inference API (config.properties)
DEFAULT_MANAGEMENT_PORT = 8081  # its management API
DEFAULT_INPUT_SIZE = 224  # the model's input side in pixels, unless an archive says otherwise (image_size)
READY = "READY"  # a TorchServe worker that can answer
FAKE_THRESHOLD = 0.5  # an image or frame counts as fake at this fake probability or above


def reaches(score: float, threshold: float) -> bool:
    """The one threshold rule, for every threshold of the project: a score at or above it counts."""
    return score >= threshold


def workers_ready(statuses: Sequence[str]) -> bool:
    """A model can answer when it has workers and every one is READY (TorchServe's /ping says Healthy while
    workers crash-loop, so the workers' own states are what counts)."""
    return bool(statuses) and all(status == READY for status in statuses)


def read_keys(text: str) -> dict[str, str]:
    """{"inference": ..., "management": ..., "api": ...} from the text of TorchServe's key_file.json;
    ValueError when it is not one."""
    try:
        data = json.loads(text)
        return {str(name).lower(): str(entry["key"]) for name, entry in data.items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a TorchServe key_file.json ({type(exc).__name__})") from None


# The largest image the server decodes, in pixels (a 61 MP photo and an 8K frame pass; a decompression
# bomb does not). The client checks video frames against it before sending them.
MAX_IMAGE_PIXELS = 64_000_000

# --- Budgets: what one request may cost the server, enforced before any pixel is decoded ----------------
# (README "Security"). Over a budget a request gets a 4xx in its own wire format naming the budget.
MAX_IMAGES_PER_REQUEST = 64  # images of one OIP request: a client packing a few dozen video frames fits
MAX_REQUEST_PIXELS = MAX_IMAGE_PIXELS  # declared pixels of one request's images together (one largest image)
# Declared pixels of one TorchServe batch: requests are admitted smallest first; the ones that no longer
# fit are answered 503 (retried by the client) instead of making every neighbour wait for them.
MAX_BATCH_PIXELS = 2 * MAX_IMAGE_PIXELS
MAX_JSON_DEPTH = 16  # nesting of a JSON body: an OIP request with [N, H, W, C] pixels needs 8
MAX_ID_LENGTH = 256  # characters of an OIP request id, which the answer echoes
# Bytes of one answer: under TorchServe's max_response_size (config.properties), which kills the worker
# when an answer exceeds it. 64 face-mode answers take about 0.3 MB; this is a guard, never a limit in use.
MAX_ANSWER_BYTES = 4_000_000
BUDGET_ERROR_TYPE = "OverBudget"  # the native error type of a request over one of these budgets (413)
BATCH_BUDGET_ERROR_TYPE = "BatchFull"  # 503: this batch's pixel budget is spent, send it again

OIP_IMAGE_INPUT = "image"  # the input tensor name oip_request() uses (the server accepts any name)
OIP_DATATYPES = ("BYTES", "UINT8")  # what the server accepts as images


def _tensor(datatype: str, item_shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """How a Prediction field travels as an OIP output tensor: datatype, shape after the image axis."""
    return {"oip": (datatype, item_shape)}


JSON_IN_BYTES = {"oip": ("BYTES", ()), "json": True}  # a structured field: one JSON text per image


class ContractError(ValueError):
    """An answer that does not fit this contract: a field missing, of the wrong type or out of range."""


def _number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContractError(f"{name} must be a finite number, got {describe(value)}")
    if not low <= value <= high:
        raise ContractError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ContractError(f"{name} must be positive, got {value!r}")
    return number


def describe(value: Any, limit: int = 60) -> str:
    """A short description of a value from the other side, safe to put in a message: never the whole value
    (a message must stay small) and never a recursive repr (a value may be nested thousands deep). Used by
    the server for requests (handler.wire) and by the client for answers."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"
    if isinstance(value, (bool, int, float)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    if isinstance(value, Mapping):
        return f"an object of {len(value)} fields"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def _row(name: str, value: Any, length: int) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        raise ContractError(f"{name} must be a list of {length} numbers, got {describe(value)}")
    return [_number(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _object(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ContractError(f"{name} must be a JSON object, got {describe(value)}")
    return value


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
        return reaches(self.fake_probability, FAKE_THRESHOLD)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_json(cls, data: Any) -> Prediction:
        """Parse and check a native answer: ContractError names a field that is missing, of the wrong type or
        out of range (extra fields are ignored; ``faces`` may be missing, from a server older than face mode)."""
        data = _object("the answer", data)
        missing = [name for name in cls.field_names() if name != "faces" and name not in data]
        if missing:
            raise ContractError(f"the answer has no {', '.join(missing)}")
        label, index = data["label"], data["class_index"]
        if not isinstance(label, str) or not label:
            raise ContractError(f"label must be a text, got {describe(label)}")
        if isinstance(index, bool) or index not in (0, 1):
            raise ContractError(f"class_index must be 0 or 1, got {describe(index)}")
        probabilities = _object("probabilities", data["probabilities"])
        if len(probabilities) != 2 or not all(isinstance(k, str) for k in probabilities):
            raise ContractError(f"probabilities must name 2 labels, got {len(probabilities)} entries")
        faces = data.get("faces")
        if faces is not None and not isinstance(faces, list):
            raise ContractError(f"faces must be a list or null, got {describe(faces)}")
        return cls(
            label=label,
            class_index=index,
            logits=_row("logits", data["logits"], 2),
            probabilities={k: _number(f"probabilities[{k[:20]!r}]", v, 0, 1) for k, v in probabilities.items()},
            fake_probability=_number("fake_probability", data["fake_probability"], 0, 1),
            softmax_confidence=_number("softmax_confidence", data["softmax_confidence"], 0, 1),
            adjusted_confidence=_number("adjusted_confidence", data["adjusted_confidence"], 0, 1),
            temperature=_positive("temperature", data["temperature"]),
            alpha=_positive("alpha", data["alpha"]),
            faces=None if faces is None else [FaceAnswer.from_json(face) for face in faces],
        )

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
    def from_json(cls, data: Any) -> FaceAnswer:
        data = _object("a face", data)
        if not {"box", "score", "prediction"} <= set(data):
            raise ContractError("a face needs box, score and prediction")
        answer = _object("a face's prediction", data["prediction"])
        if answer.get("faces") is not None:
            raise ContractError("a face's prediction cannot have faces of its own")
        return cls(_row("box", data["box"], 4), _number("score", data["score"], 0, 1), Prediction.from_json(answer))


# --- explanations (TorchServe's explanations API: POST /explanations/<model>, native format only) ---
EXPLANATION_METHOD = "grad-cam"  # handler.explain says why
MAX_EXPLANATIONS_PER_BATCH = 2  # images explained per TorchServe batch; the others get 503 BatchFull
MAX_HEATMAP_CELLS = 64  # rows and columns of a heatmap at most (ResNets at 224 px give 14x14)


@dataclass(frozen=True)
class Heatmap:
    """Where the classifier saw manipulation in one region: the whole image, or one face's crop."""

    region: list[float]  # [left, top, right, bottom] in the image's pixels: what the classifier saw
    values: list[list[float]]  # rows top to bottom, each in [0, 1] (1: the cell that drove "fake" most)
    fake_probability: float  # the served answer for this region
    box: list[float] | None = None  # the face's box (face-crop archives), else None

    def to_json(self) -> dict[str, Any]:
        return {
            "region": list(self.region),
            "values": [list(row) for row in self.values],
            "fake_probability": self.fake_probability,
            "box": None if self.box is None else list(self.box),
        }

    @classmethod
    def from_json(cls, data: Any) -> Heatmap:
        data = _object("a heatmap", data)
        if not {"region", "values", "fake_probability"} <= set(data):
            raise ContractError("a heatmap needs region, values and fake_probability")
        values = data["values"]
        if not isinstance(values, list) or not 0 < len(values) <= MAX_HEATMAP_CELLS:
            raise ContractError(f"a heatmap's values must be 1 to {MAX_HEATMAP_CELLS} rows, got {describe(values)}")
        width = len(values[0]) if isinstance(values[0], list) else 0
        if not 0 < width <= MAX_HEATMAP_CELLS:
            raise ContractError(f"a heatmap's rows must hold 1 to {MAX_HEATMAP_CELLS} numbers")
        rows = [[_number("a heatmap value", v, 0, 1) for v in _row("a heatmap row", row, width)] for row in values]
        box = data.get("box")
        return cls(
            region=_row("region", data["region"], 4),
            values=rows,
            fake_probability=_number("fake_probability", data["fake_probability"], 0, 1),
            box=None if box is None else _row("box", box, 4),
        )


@dataclass(frozen=True)
class Explanation:
    """The answer of the explanations API for one image: its prediction (from the runtime that serves
    predictions) and one heatmap per region the classifier saw (computed from the fp32 weights)."""

    method: str  # EXPLANATION_METHOD
    layer: str  # the layer whose activations the map weighs
    target: str  # the label whose logit is explained: the fake label
    prediction: Prediction
    heatmaps: list[Heatmap]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layer": self.layer,
            "target": self.target,
            "prediction": self.prediction.to_json(),
            "heatmaps": [heatmap.to_json() for heatmap in self.heatmaps],
        }

    @classmethod
    def from_json(cls, data: Any) -> Explanation:
        data = _object("the explanation", data)
        missing = [k for k in ("method", "layer", "target", "prediction", "heatmaps") if k not in data]
        if missing:
            raise ContractError(f"the explanation has no {', '.join(missing)}")
        heatmaps = data["heatmaps"]
        if not isinstance(heatmaps, list) or not heatmaps:
            raise ContractError(f"heatmaps must be a non-empty list, got {describe(heatmaps)}")
        for name in ("method", "layer", "target"):
            if not isinstance(data[name], str):
                raise ContractError(f"{name} must be a text, got {describe(data[name])}")
        return cls(
            method=data["method"],
            layer=data["layer"],
            target=data["target"],
            prediction=Prediction.from_json(data["prediction"]),
            heatmaps=[Heatmap.from_json(h) for h in heatmaps],
        )


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
        return wire_format(protocol).error_body(self)

    @property
    def is_no_face(self) -> bool:
        return is_no_face(self.code, self.type)

    @classmethod
    def from_json(cls, data: Any, status: int) -> ErrorAnswer:
        """Parse either format's error body (anything else: an empty type, the text as message)."""
        if isinstance(data, Mapping):
            message, code, kind = data.get("message", data.get("error")), data.get("code"), data.get("type")
            if isinstance(message, str):
                code = code if isinstance(code, int) and not isinstance(code, bool) else status
                return cls(code, kind[:100] if isinstance(kind, str) else "", message[:1000])
        return cls(status, "", data[:1000] if isinstance(data, str) else "")


UNKNOWN = "unknown"


@dataclass(frozen=True)
class ModelCard:
    """What a model is, travelling in its archive: what it was trained on, how it did on held-out data, how
    it was calibrated and checked, what it is for and where it fails. ``make mar`` fills what it knows (the
    demo: everything); a user's card file (``MODEL_CARD=card.yaml``) the rest; "unknown" otherwise."""

    trained_on: str = UNKNOWN  # the data: source, kind of images, how they were labelled
    classes: tuple[str, ...] = ()
    training_images: int | None = None
    held_out: dict[str, float] = field(default_factory=dict)  # accuracy, auc, eer, ece (scripts/modeling/evaluate.py)
    calibration: str = UNKNOWN
    precision_check: str = UNKNOWN
    intended_use: str = UNKNOWN
    limits: str = UNKNOWN

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any) -> ModelCard:
        data = _object("the model card", data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ContractError(f"the model card has unknown fields {', '.join(unknown)}; known: "
                                f"{', '.join(f.name for f in fields(cls))}")  # fmt: skip
        values = dict(data)
        for name in ("trained_on", "calibration", "precision_check", "intended_use", "limits"):
            if not isinstance(values.get(name, UNKNOWN), str):
                raise ContractError(f"model card {name} must be a text, got {describe(values[name])}")
        if "classes" in values:
            values["classes"] = tuple(str(c) for c in values["classes"] or ())
        held_out = _object("model card held_out", values.get("held_out") or {})
        values["held_out"] = {str(k): _number(f"held_out {k}", v) for k, v in held_out.items()}
        count = values.get("training_images")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ContractError(f"model card training_images must be a count, got {describe(count)}")
        return cls(**values)


@dataclass(frozen=True)
class ModelMetadata:
    """What a client needs to know about a served model; the handler builds it from the archive's settings
    and publishes it in the management API's ``customizedMetadata["metadata"]``."""

    input_size: int  # frames resized to input_size x input_size travel small and decode exactly
    labels: tuple[str, ...]
    fake_label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str  # the mode that runs: fp32 | bf16 | int8 on the CPU (fp32 | bf16 | fp16 on a GPU)
    arch: str
    temperature: float
    alpha: float
    max_image_pixels: int = MAX_IMAGE_PIXELS
    protocols: tuple[str, ...] = PROTOCOLS
    crop: str = "full"  # "face": the server finds faces itself, so frames must keep their full resolution
    notice: str = ""  # what every answer's reader must be told about the model (e.g. that it is a demo)
    card: ModelCard = field(default_factory=ModelCard)

    def to_json(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "card"}
        return {**data, "card": self.card.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> ModelMetadata:
        """Parse and check published metadata; ContractError when a field is missing or makes no sense."""
        data = _object("the model's metadata", data)
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["card"] = ModelCard.from_json(values.get("card") or {})
        try:
            for name in ("labels", "mean", "std", "protocols"):
                if name in values:
                    values[name] = tuple(values[name])
            metadata = cls(**values)
        except TypeError as exc:  # a missing field, or one that is not a list
            raise ContractError(f"the model's metadata does not fit: {exc}") from None
        size = metadata.input_size
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
            raise ContractError(f"input_size must be a whole number of pixels from 16 to 4096, got {describe(size)}")
        if not isinstance(metadata.crop, str) or len(metadata.labels) != 2:
            raise ContractError("the model's metadata needs a crop mode and two labels")
        if not isinstance(metadata.notice, str):
            raise ContractError(f"notice must be a text, got {describe(metadata.notice)}")
        return metadata


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


def predictions_from_oip(response: Any) -> list[Prediction]:
    """Parse and check an OIP answer: one Prediction per image; ContractError when it does not fit."""
    try:
        return _predictions_from_oip(response)
    except ContractError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ContractError(
            f"the OIP answer does not fit the contract ({type(exc).__name__}: {str(exc)[:80]})"
        ) from None


def _predictions_from_oip(response: Any) -> list[Prediction]:
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
        rows: list[Any] = [data[i * width : (i + 1) * width] for i in range(count)] if item_shape else data
        if spec.name == "probabilities":
            labels = json.loads(tensor["parameters"]["labels"])
            rows = [dict(zip(labels, row, strict=True)) for row in rows]
        if spec.metadata.get("json"):
            rows = [json.loads(row) for row in rows]
        columns[spec.name] = rows
    return [Prediction.from_json({name: column[i] for name, column in columns.items()}) for i in range(count)]


# --- the wire formats -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerTo:
    """Whom an answer is for: the model that gives it, and the request's id and version, echoed."""

    model_name: str
    request_id: str | None = None
    model_version: str | None = None


class WireFormat:
    """One protocol on the wire, as the server and the client both see it: where a request goes and what
    its body holds, what an answer and an error look like, where liveness and readiness are asked. The
    handler and the client look the protocol up once (``wire_format``) and never branch on its name, so
    a third protocol is one more subclass."""

    name: str
    max_images: int  # images one request may carry
    live_path: str  # GET: is the server up (not whether a model is ready)

    def infer_path(self, model: str) -> str:
        raise NotImplementedError

    def ready_path(self, model: str) -> str | None:
        """GET: is ``model`` ready to answer; None when the protocol has no such path."""
        raise NotImplementedError

    def request(self, images: Sequence[bytes]) -> dict[str, Any]:
        """The HTTP request's body and headers for encoded images, as ``requests`` keyword arguments."""
        raise NotImplementedError

    def answer(
        self,
        model_name: str,
        results: Sequence[Prediction | Explanation],
        request_id: str | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """The answer body to one request, its results in the order of its images."""
        return self._answer_body(list(results), AnswerTo(model_name, request_id, model_version))

    def _answer_body(self, results: list[Prediction | Explanation], to: AnswerTo) -> dict[str, Any]:
        raise NotImplementedError

    def predictions(self, data: Any) -> list[Prediction]:
        """Parse an answer body: one Prediction per image; ContractError when it does not fit."""
        raise NotImplementedError

    def error_body(self, error: ErrorAnswer) -> dict[str, Any]:
        raise NotImplementedError

    def health(self, data: Any) -> dict[str, Any]:
        """The liveness answer as ``{"status": "Healthy" | ...}``; ContractError when it says nothing."""
        raise NotImplementedError


class NativeWire(WireFormat):
    """TorchServe's own API: one image per request, the answer the Prediction's JSON."""

    name = NATIVE
    max_images = 1
    live_path = "/ping"

    def infer_path(self, model: str) -> str:
        return f"/predictions/{model}"

    def ready_path(self, model: str) -> str | None:
        return None  # TorchServe's management API tells it, worker by worker

    def request(self, images: Sequence[bytes]) -> dict[str, Any]:
        if len(images) != 1:
            raise ContractError(f"the native API takes one image per request, not {len(images)}")
        return {"data": images[0], "headers": {"Content-Type": "application/octet-stream"}}

    def _answer_body(self, results: list[Prediction | Explanation], to: AnswerTo) -> dict[str, Any]:
        if len(results) != 1:
            raise ContractError(f"a native answer is one result, not {len(results)}")
        return results[0].to_json()

    def predictions(self, data: Any) -> list[Prediction]:
        return [Prediction.from_json(data)]

    def error_body(self, error: ErrorAnswer) -> dict[str, Any]:
        return {"code": error.code, "type": error.type, "message": error.message}

    def health(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping) or not isinstance(data.get("status"), str):
            raise ContractError(f"no status in {str(data)[:80]}")
        return dict(data)


class OipWire(WireFormat):
    """The Open Inference Protocol (KServe v2): images as one BYTES tensor, one output tensor per field."""

    name = OIP
    max_images = MAX_IMAGES_PER_REQUEST
    live_path = "/v2/health/live"

    def infer_path(self, model: str) -> str:
        return f"/v2/models/{model}/infer"

    def ready_path(self, model: str) -> str | None:
        return f"/v2/models/{model}/ready"

    def request(self, images: Sequence[bytes]) -> dict[str, Any]:
        return {"json": oip_request(images)}

    def _answer_body(self, results: list[Prediction | Explanation], to: AnswerTo) -> dict[str, Any]:
        predictions = [result for result in results if isinstance(result, Prediction)]
        if len(predictions) != len(results):
            raise ContractError("an OIP answer carries predictions only (explanations are the native API's)")
        return oip_response(to.model_name, predictions, to.request_id, to.model_version)

    def predictions(self, data: Any) -> list[Prediction]:
        return predictions_from_oip(data)

    def error_body(self, error: ErrorAnswer) -> dict[str, Any]:
        return {"error": error.message}

    def health(self, data: Any) -> dict[str, Any]:
        live = data.get("live") if isinstance(data, Mapping) else None
        return {"status": "Healthy" if live is True else "Unhealthy"}


WIRE_FORMATS: dict[str, WireFormat] = {NATIVE: NativeWire(), OIP: OipWire()}


def wire_format(protocol: str) -> WireFormat:
    try:
        return WIRE_FORMATS[protocol]
    except KeyError:
        raise ContractError(f"protocol must be one of {', '.join(WIRE_FORMATS)}, got {protocol!r}") from None


__all__ = [
    "BATCH_BUDGET_ERROR_TYPE",
    "BUDGET_ERROR_TYPE",
    "DEFAULT_INFERENCE_PORT",
    "DEFAULT_INPUT_SIZE",
    "DEFAULT_MANAGEMENT_PORT",
    "DEFAULT_MODEL",
    "EXPLANATION_METHOD",
    "FAKE_THRESHOLD",
    "JSON_IN_BYTES",
    "MAX_ANSWER_BYTES",
    "MAX_BATCH_PIXELS",
    "MAX_EXPLANATIONS_PER_BATCH",
    "MAX_HEATMAP_CELLS",
    "MAX_ID_LENGTH",
    "MAX_IMAGES_PER_REQUEST",
    "MAX_IMAGE_PIXELS",
    "MAX_JSON_DEPTH",
    "MAX_REQUEST_PIXELS",
    "NATIVE",
    "NO_FACE_STATUS",
    "NO_FACE_TYPE",
    "OIP",
    "OIP_DATATYPES",
    "OIP_IMAGE_INPUT",
    "PROTOCOLS",
    "READY",
    "UNKNOWN",
    "WIRE_FORMATS",
    "ContractError",
    "ErrorAnswer",
    "Explanation",
    "FaceAnswer",
    "Heatmap",
    "ModelCard",
    "ModelMetadata",
    "NativeWire",
    "OipWire",
    "Prediction",
    "WireFormat",
    "describe",
    "is_no_face",
    "oip_outputs",
    "oip_request",
    "oip_response",
    "predictions_from_oip",
    "reaches",
    "read_keys",
    "wire_format",
    "workers_ready",
]
