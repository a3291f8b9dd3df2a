"""The model core: image bytes in, answers out, through the runtime the archive chose.

Independent of TorchServe and of any wire format: the TorchServe handler (``deepfake_handler``)
turns request items into image bytes and answers into HTTP responses (``handler.formats``), and
everything here is tested in-process (TorchServe is archived upstream; the logic must not depend
on its internals).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfake_contract import (
    EXPLANATION_METHOD,
    MAX_IMAGE_PIXELS,
    ErrorAnswer,
    Explanation,
    FaceAnswer,
    Heatmap,
    ModelCard,
    ModelMetadata,
    Prediction,
)
from handler.calibration import (
    CHECK_FOLDER,
    MAX_MEAN_FAKE_PROBABILITY_DIFF,
    MIN_LABEL_AGREEMENT,
    agreement,
    predictions_from_logits,
)
from handler.checkpoint import load_model
from handler.explain import LazyGradCam
from handler.faces import Face, Frame, Region, crop, crop_images, crop_regions, detector_for, no_face_error
from handler.preprocessing import (
    InvalidImageError,
    decode_frames,
    decode_image,
    decode_pixels,
    is_plain_frame,
    to_model_input,
)
from handler.runtimes import Accelerator, CudaRuntime, Runtime, TorchRuntime, load_runtime
from handler.settings import ModelSettings

logger = logging.getLogger(__name__)
DEFAULT_MAX_BATCH_SIZE = 8  # an archive's batchSize (scripts/operations/archive.py) when none is given
MODEL_CARD_KEY = "model_card"  # where an archive's settings carry its card (scripts/operations/archive.py writes it)
LOST_DEVICE_EXIT_CODE = 70  # EX_SOFTWARE: a worker whose GPU no longer runs work exits; TorchServe starts another


def device_works(device: torch.device) -> bool:
    """Whether ``device`` still runs work. A kernel that faults there (an illegal memory access: a decoder
    reading past a crafted buffer, say) loses the process's CUDA context for good, so that every later call
    fails: a worker left running would then fail every request until something restarted it."""
    try:
        return torch.ones(1, device=device).add_(1).item() == 2.0  # .item() waits for the device
    except Exception:
        return False


class ItemError(ErrorAnswer):
    """A per-image failure: becomes that request's HTTP status and error body (deepfake_contract)."""

    @classmethod
    def from_exception(cls, exc: InvalidImageError) -> ItemError:
        return cls(exc.status, exc.error_type, str(exc))


@dataclass(frozen=True)
class BatchTiming:
    """Where a batch's time went: decoding + resizing, and the forward pass."""

    size: int
    decode_ms: float
    inference_ms: float


def checked_half_precision(runtime: CudaRuntime, settings: ModelSettings, images: Sequence[bytes]) -> Runtime:
    """``runtime`` (fp16 or bf16 on a GPU) when it agrees with fp32 on the same device on ``images`` (the
    held-out images make mar packs), as int8 must on the CPU at make mar; else fp32 on that device, and
    the worker's log and ``describe`` say why. Without images it runs unchecked, and says so."""
    info = runtime.info
    if not images:
        logger.warning("%s on %s is not checked against fp32: the archive carries no check images", info.precision,
                       info.device)  # fmt: skip
        return runtime
    fp32 = CudaRuntime(runtime.model, info.device, "fp32", dataclasses.replace(info, precision="fp32"))
    inputs = [to_model_input(decode_image(image), settings.mean, settings.std, settings.image_size) for image in images]
    batch = torch.stack(inputs).numpy()
    measured = agreement(
        torch.from_numpy(fp32(batch)), torch.from_numpy(runtime(batch)), settings.temperature, settings.fake_index
    )
    summary = (
        f"{info.precision} vs fp32 on {info.device}, {measured['images']} held-out images: labels agree "
        f"{measured['label_agreement']:.2%}, mean |fake probability diff| {measured['mean_abs_fake_probability_diff']}"
    )
    if measured["passes"]:
        logger.info("%s: within the bar", summary)
        runtime.info = dataclasses.replace(info, agreement=measured)
        return runtime
    reason = f"{summary}: misses the bar (>= {MIN_LABEL_AGREEMENT:.0%}, <= {MAX_MEAN_FAKE_PROBABILITY_DIFF})"
    logger.warning("%s; running fp32", reason)
    fallback = "; ".join(filter(None, [info.fallback, reason]))
    fp32.info = dataclasses.replace(info, precision="fp32", fallback=fallback, agreement=measured)
    return fp32


class DetectorService:
    """A runtime plus the settings that say how to feed it and read its two logits."""

    # After an error on the GPU: whether it still runs work, and how the worker leaves when it does not (both
    # replaced in tests; os._exit because TorchServe restarts a worker whose process ends, and a lost CUDA
    # context would fail the interpreter's own clean-up).
    device_works: Callable[[torch.device], bool] = staticmethod(device_works)
    exit_process: Callable[[int], None] = staticmethod(os._exit)

    def __init__(
        self, runtime: Runtime, settings: ModelSettings, reference: Callable[[], torch.nn.Module] | None = None
    ):
        """``reference``: loads the fp32 torch model that explanations differentiate (default: the runtime's
        own model, when it is a torch one)."""
        self.runtime = runtime
        self.settings = settings
        if reference is None and isinstance(runtime, TorchRuntime):
            reference = lambda: runtime.model  # noqa: E731
        self.grad_cam = LazyGradCam(reference, settings.fake_index) if reference is not None else None
        # The largest forward pass (the archive's batchSize, set by the handler): bigger batches run in chunks.
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.detector = detector_for(settings) if settings.crop == "face" else None
        # Where the client's plain JPEG frames are decoded in one batch (nvJPEG): the GPU a torch runtime runs on,
        # measured 11-26x faster per batch than the CPU (docs/benchmark.md, 14). None: every image on the CPU.
        self.frame_device: torch.device | None = None
        if isinstance(runtime, CudaRuntime) and runtime.device.type == "cuda" and settings.crop == "full":
            self.frame_device = runtime.device

    @classmethod
    def from_checkpoint(
        cls, weights: str | Path, settings: ModelSettings, device: torch.device | str = "cpu"
    ) -> DetectorService:
        """Torch eager fp32 straight from a checkpoint (training, evaluation, references)."""
        model, arch = load_model(weights, arch=settings.arch)
        return cls(TorchRuntime(model, device), dataclasses.replace(settings, arch=arch))

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        weights_name: str,
        settings: ModelSettings,
        capabilities: set[str] | None = None,
        accelerator: Accelerator | None = None,
    ) -> DetectorService:
        """The runtime an unpacked archive asks for (``settings.precision``), or its nearest fallback; on the
        GPU ``accelerator`` names, when there is one."""
        weights = Path(model_dir) / weights_name

        def reference() -> torch.nn.Module:
            return load_model(weights, arch=settings.arch)[0]

        runtime = load_runtime(
            Path(model_dir), settings.precision, reference, settings.image_size, capabilities, accelerator
        )
        if isinstance(runtime, CudaRuntime) and runtime.dtype is not None:
            images = sorted((Path(model_dir) / CHECK_FOLDER).glob("*.img"))
            runtime = checked_half_precision(runtime, settings, [p.read_bytes() for p in images])
        return cls(runtime, settings, reference)

    def decode_image(self, payload: bytes | Image.Image) -> Image.Image:
        """Image bytes (or an already decoded image) -> RGB image; raises InvalidImageError. A face-crop
        archive decodes at full resolution: the faces are found in it."""
        if isinstance(payload, Image.Image):
            return payload
        draft = self.settings.image_size if self.settings.jpeg_draft and self.detector is None else None
        return decode_image(payload, draft)

    def decode_frame(self, payload: bytes | Image.Image) -> Frame:
        """What a request's image is decoded to before its regions are cut: in a face-crop archive its pixel
        array (the detector reads it, the crops are cut from it: ``decode_pixels``), else ``decode_image``'s."""
        if self.detector is not None and isinstance(payload, bytes):
            return decode_pixels(payload)
        return self.decode_image(payload)

    def decode(self, payload: bytes | Image.Image) -> torch.Tensor:
        """The whole image as the model's input tensor (what ``crop: full`` classifies)."""
        return self.to_input(self.decode_image(payload))

    def to_input(self, image: Image.Image) -> torch.Tensor:
        return to_model_input(image, self.settings.mean, self.settings.std, self.settings.image_size)

    def crops(self, payload: bytes | Image.Image) -> list[tuple[Face | None, Image.Image]]:
        """What the model classifies of one image (handler.faces.crop_images); NoFaceError if a face-crop
        archive finds no face."""
        image = self.decode_frame(payload)
        crops = crop_images(image, self.settings, self.detector)
        if not crops:
            raise no_face_error(self.settings, image)
        return crops

    def regions(self, payload: bytes | Image.Image) -> tuple[Frame, list[tuple[Face | None, Region]]]:
        """The decoded image and the regions of it the model classifies ([left, top, right, bottom])."""
        image = self.decode_frame(payload)
        regions = crop_regions(image, self.settings, self.detector)
        if not regions:
            raise no_face_error(self.settings, image)
        return image, regions

    def logits(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """One forward pass for a whole (N, 3, H, W) batch: (N, 2) float32 logits."""
        if (
            isinstance(self.runtime, CudaRuntime)
            and isinstance(batch, torch.Tensor)
            and batch.device == self.runtime.device
        ):
            return torch.from_numpy(self.runtime(batch))  # frames decoded on its GPU: they stay there
        return torch.from_numpy(self.runtime(np.asarray(batch, dtype=np.float32)))

    def frames_on_device(
        self, pending: list[tuple[int, bytes]], device: torch.device
    ) -> tuple[list[torch.Tensor], dict[int, ItemError]]:
        """Plain frames ``(index, bytes)`` as the model's inputs on ``device``, in one nvJPEG batch. When nvJPEG
        refuses the batch, each frame is decoded on the CPU instead, where a bad one fails alone: its error, by
        index, and no input for it."""
        try:
            decoded = decode_frames([frame for _, frame in pending], device, self.settings.mean, self.settings.std)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # its time is decoding's, not inference's (and its errors surface here)
            return list(decoded), {}
        except Exception as exc:
            self.leave_if_device_lost(device, exc)
            logger.warning("nvJPEG refused a batch of %d frames (%s): decoding them on the CPU", len(pending), exc)
        inputs, errors = [], {}
        for index, frame in pending:
            try:
                inputs.append(self.decode(frame).to(device))
            except InvalidImageError as exc:
                errors[index] = ItemError.from_exception(exc)
            except Exception as exc:
                logger.exception("Could not decode image %d of a batch", index)
                errors[index] = ItemError(400, "InvalidImage", f"cannot decode image ({type(exc).__name__})")
        return inputs, errors

    def leave_if_device_lost(self, device: torch.device, error: Exception) -> None:
        """After ``error`` on ``device``: end this worker's process when the device no longer runs work, so that
        TorchServe starts a fresh one (the batch's requests are answered 507/500 and clients retry them),
        instead of failing every later request. A refused input or an out-of-memory leaves it working: then
        only this batch is lost."""
        if self.device_works(device):
            return
        logger.critical(
            "%s no longer runs work after %s (%s): ending this worker so that TorchServe starts a fresh one",
            device, type(error).__name__, error,
        )  # fmt: skip
        sys.stdout.flush()  # TorchServe reads the worker's log lines from its output
        sys.stderr.flush()
        self.exit_process(LOST_DEVICE_EXIT_CODE)

    def predict(self, payloads: Sequence[bytes | Image.Image]) -> tuple[list[Prediction | ErrorAnswer], BatchTiming]:
        """Answer every image of a batch (every face of every image, in face mode), and how long decoding
        and the forward passes took; a bad item fails alone.

        Images are decoded as the forward passes need them, ``max_batch_size`` at a time: however many a
        batch carries, the worker holds one chunk of inputs and runs only the batch sizes it warmed up. On a GPU
        worker the client's plain frames of a chunk are decoded there together (``frames_on_device``).
        """
        started = time.perf_counter()
        inference_s = 0.0
        results: list[Prediction | ErrorAnswer | None] = [None] * len(payloads)
        faces: dict[int, list[FaceAnswer]] = {}
        tensors: list[torch.Tensor] = []
        owners: list[tuple[int, Face | None]] = []
        pending: list[tuple[int, bytes]] = []  # plain frames of this chunk, for frame_device
        classified = 0

        def forward() -> None:
            nonlocal inference_s, classified
            if pending and self.frame_device is not None:
                decoded, errors = self.frames_on_device(pending, self.frame_device)
                for index, error in errors.items():
                    results[index] = error
                owners.extend((index, None) for index, _ in pending if index not in errors)
                pending.clear()
                tensors.extend(decoded)
            if not tensors:
                return
            begun = time.perf_counter()
            if self.frame_device is not None and any(tensor.device == self.frame_device for tensor in tensors):
                batch: np.ndarray | torch.Tensor = torch.stack([tensor.to(self.frame_device) for tensor in tensors])
            else:
                batch = np.stack([tensor.numpy() for tensor in tensors])  # on this thread (to_model_input says why)
            try:
                logits = self.logits(batch)
            except Exception as exc:
                if isinstance(self.runtime, CudaRuntime):
                    self.leave_if_device_lost(self.runtime.device, exc)
                raise
            answers = predictions_from_logits(logits, self.settings)
            for (index, face), answer in zip(owners, answers, strict=True):
                if face is None:
                    results[index] = answer
                else:
                    faces.setdefault(index, []).append(FaceAnswer(list(face.box), face.score, answer))
            classified += len(tensors)
            tensors.clear()
            owners.clear()
            inference_s += time.perf_counter() - begun

        size = self.settings.image_size
        for index, payload in enumerate(payloads):
            if self.frame_device is not None and isinstance(payload, bytes) and is_plain_frame(payload, size):
                pending.append((index, payload))
                if len(tensors) + len(pending) >= self.max_batch_size:
                    forward()
                continue
            try:
                crops = self.crops(payload)
            except InvalidImageError as exc:
                results[index] = ItemError.from_exception(exc)
                continue
            except Exception as exc:
                logger.exception("Could not decode image %d of a batch", index)
                results[index] = ItemError(400, "InvalidImage", f"cannot decode image ({type(exc).__name__})")
                continue
            for face, cropped in crops:
                tensors.append(self.to_input(cropped))
                owners.append((index, face))
                if len(tensors) + len(pending) >= self.max_batch_size:
                    forward()
        if tensors or pending:
            forward()
        for index, found in faces.items():  # the image's answer is its most fake face's
            results[index] = image_answer(found)
        total_ms = (time.perf_counter() - started) * 1e3
        timing = BatchTiming(classified, total_ms - inference_s * 1e3, inference_s * 1e3)
        return results, timing  # type: ignore[return-value]

    def explain(self, payload: bytes | Image.Image) -> Explanation | ErrorAnswer:
        """One image's explanation (handler.explain): a heatmap per region the model classifies, from the
        fp32 weights, beside the prediction the serving runtime gives; a bad image is its ErrorAnswer."""
        if self.grad_cam is None:
            return ItemError(501, "NotExplainable", "this archive carries no fp32 model to explain with")
        try:
            image, regions = self.regions(payload)
        except InvalidImageError as exc:
            return ItemError.from_exception(exc)
        except Exception as exc:
            logger.exception("Could not decode an image to explain")
            return ItemError(400, "InvalidImage", f"cannot decode image ({type(exc).__name__})")
        batch = torch.stack([self.to_input(crop(image, region)) for _, region in regions])
        answers = predictions_from_logits(self.logits(batch), self.settings)
        grad_cam = self.grad_cam.get()
        maps = grad_cam(batch)
        heatmaps = [
            Heatmap(
                region=[float(v) for v in region],
                values=np.round(values, 4).tolist(),
                fake_probability=answer.fake_probability,
                box=None if face is None else list(face.box),
            )
            for (face, region), answer, values in zip(regions, answers, maps, strict=True)
        ]
        faces = [face for face, _ in regions if face is not None]
        if not faces:
            prediction = answers[0]
        else:
            prediction = image_answer(
                [FaceAnswer(list(face.box), face.score, a) for face, a in zip(faces, answers, strict=True)]
            )
        return Explanation(EXPLANATION_METHOD, grad_cam.layer_name, self.settings.fake_label, prediction, heatmaps)

    def warm_up(self, max_batch_size: int) -> None:
        """Run every batch size once, so that no request pays for a first-time kernel choice."""
        size = self.settings.image_size
        for batch in range(1, max_batch_size + 1):
            self.runtime(np.zeros((batch, 3, size, size), dtype=np.float32))
        if self.detector is not None:  # loads the face detector's networks
            self.detector.detect(Image.new("RGB", (size, size)))
        if self.frame_device is not None:  # nvJPEG's first batch loads it: not a request's cost
            blank = io.BytesIO()
            Image.new("RGB", (size, size), (128, 128, 128)).save(blank, format="JPEG")
            try:
                decode_frames([blank.getvalue()], self.frame_device, self.settings.mean, self.settings.std)
            except Exception as exc:
                self.leave_if_device_lost(self.frame_device, exc)
                logger.warning("nvJPEG cannot decode on %s (%s): frames are decoded on the CPU", self.frame_device, exc)
                self.frame_device = None

    def metadata(self) -> ModelMetadata:
        """What clients need to know (deepfake_contract): input size, labels, normalisation, precision."""
        s = self.settings
        return ModelMetadata(
            input_size=s.image_size,
            labels=s.labels,
            fake_label=s.fake_label,
            mean=s.mean,
            std=s.std,
            precision=self.runtime.info.precision,
            arch=s.arch,
            temperature=s.temperature,
            alpha=s.alpha,
            max_image_pixels=MAX_IMAGE_PIXELS,
            crop=s.crop,
            notice=s.notice,
            card=ModelCard.from_json(s.extra.get(MODEL_CARD_KEY) or {}),
        )

    def describe(self) -> dict[str, Any]:
        """The management API's customizedMetadata: the client's metadata, and the archive's full record."""
        return {
            "metadata": self.metadata().to_json(),
            "settings": self.settings.to_mapping(),
            "runtime": {
                **self.runtime.info.to_mapping(),
                "threads": torch.get_num_threads(),
                "frames_decoded_on": str(self.frame_device or "cpu"),  # the client's plain JPEG frames
            },
        }


def image_answer(faces: list[FaceAnswer]) -> Prediction:
    """A face-crop archive's answer for an image: its most fake face's, with every face listed."""
    top = max(faces, key=lambda f: f.prediction.fake_probability)
    return dataclasses.replace(top.prediction, faces=faces)


def settings_from_model_config(config: Mapping[str, Any] | None) -> ModelSettings:
    """The ``handler:`` section of an archive's model-config.yaml."""
    return ModelSettings.from_mapping((config or {}).get("handler") or {})
