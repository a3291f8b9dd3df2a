"""Sections 1, 4 and the JPEG-draft row: in-process ceilings, each run in a fresh interpreter
(``harness.in_fresh_process``) so that its memory is its own.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from PIL import Image

from deepfake_contract import FAKE_THRESHOLD
from handler.calibration import softmax_with_temperature
from handler.checkpoint import load_model
from handler.preprocessing import decode_image, to_model_input
from handler.settings import ModelSettings
from scripts.bench.benchmark.harness import percentile, timed
from scripts.operations.archives import (
    load_archive,
)


def _ceiling(kind: str, source: str, batch: int, iterations: int) -> dict[str, Any]:
    torch.set_num_threads(os.cpu_count() or 1)
    inputs = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    precision = {"torch-fp32": "fp32", "torch-bf16": "bf16"}.get(kind)
    if kind == "archive":
        run = load_archive(Path(source)).runtime
        precision = run.info.precision  # what runs: a bf16 archive runs as fp32 on a CPU without BF16
    else:
        model = load_model(source)[0].to(memory_format=torch.channels_last)
        tensor = torch.from_numpy(inputs).contiguous(memory_format=torch.channels_last)

        def run(_: np.ndarray) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "torch-bf16"):
                model(tensor)

    times = timed(lambda: run(inputs), iterations, warm_up=3)
    return {
        "images_per_s": batch * len(times) / sum(times),
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "precision": precision,
    }


@torch.inference_mode()
def classify_like_the_original_app(model: torch.nn.Module, payload: bytes, mean: Any, std: Any) -> torch.Tensor:
    """The original Flask app's path for one image: decode, resize to 224, fp32 forward of a batch of one."""
    return model(to_model_input(decode_image(payload), mean, std).unsqueeze(0))


def _original_app(weights: str, mean: list[float], std: list[float], paths: list[str]) -> dict[str, float]:
    model = load_model(weights)[0]
    payloads = [Path(p).read_bytes() for p in paths]
    times = []
    for i, payload in enumerate([*payloads[:3], *payloads]):
        started = time.perf_counter()
        classify_like_the_original_app(model, payload, mean, std)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return {
        "images_per_s": len(times) / sum(times),
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
    }


def _jpeg_draft(weights: str, settings: dict[str, Any], sources: list[str], size: tuple[int, int]) -> dict[str, float]:
    """Large JPEG uploads decoded exactly and in draft mode: decode+resize time, and the deviation."""
    from handler.runtimes import TorchRuntime
    from handler.service import DetectorService

    model = load_model(weights)[0]
    exact = DetectorService(TorchRuntime(model), ModelSettings.from_mapping(settings))
    draft = DetectorService(exact.runtime, ModelSettings.from_mapping({**settings, "jpeg_draft": True}))
    uploads = []
    for source in sources:  # upscaled, then re-encoded as a camera would (quality 90)
        buffer = io.BytesIO()
        Image.open(source).convert("RGB").resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        uploads.append(buffer.getvalue())
    result: dict[str, float] = {"images": len(uploads), "width": size[0], "height": size[1]}
    probabilities = {}
    for name, service in (("exact", exact), ("draft", draft)):
        started = time.perf_counter()
        batch = torch.stack([service.decode(upload) for upload in uploads])
        result[f"{name}_decode_ms"] = (time.perf_counter() - started) * 1e3 / len(uploads)
        probabilities[name] = softmax_with_temperature(service.logits(batch), service.settings.temperature)[
            :, service.settings.fake_index
        ]
    diff = (probabilities["exact"] - probabilities["draft"]).abs()
    result["mean_abs_fake_probability_diff"] = float(diff.mean())
    result["max_abs_fake_probability_diff"] = float(diff.max())
    result["label_agreement"] = float(
        ((probabilities["exact"] >= FAKE_THRESHOLD) == (probabilities["draft"] >= FAKE_THRESHOLD)).double().mean()
    )
    return result
