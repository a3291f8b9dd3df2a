"""A TorchServe worker on a machine with a CUDA GPU runs there: CUDA machines only (skipped elsewhere; run
where a GPU is lent, with tests/test_runtimes.py's GPU tests)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from deepfake_client import DeepfakeClient
from handler.checkpoint import build_model
from handler.service import DetectorService
from handler.settings import HALF_MEAN, HALF_STD, ModelSettings
from scripts.bench.benchmark.gpu import gpu_archive
from scripts.bench.benchmark.harness import MODEL_NAME, Subject, frame_payloads, serving

TIER = "integration"

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tested where one is lent)")


def test_a_served_worker_runs_half_precision_on_its_gpu_and_answers_each_image(tmp_path: Path):
    """TorchServe gives the worker gpu_id 0 (it finds the GPU itself); the default (int8) archive runs fp16 there,
    and 32 distinct frames sent by 16 concurrent clients each get their own answer, as fp32 on the CPU gives it."""
    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(build_model("resnet18").state_dict(), weights)
    settings = ModelSettings(mean=HALF_MEAN, std=HALF_STD)
    archive = gpu_archive(Subject("resnet18", weights, settings), tmp_path / "mar", "int8", 8, 1)
    payloads = frame_payloads(32, quick=True)
    reference = DetectorService.from_checkpoint(weights, settings)
    expected = [answer.fake_probability for answer in reference.predict(payloads)[0]]
    assert len(set(expected)) == len(payloads)  # distinct inputs, distinct answers
    with serving(archive, tmp_path / "ts") as (ts, _), DeepfakeClient(ts.client_config()) as client:
        runtime = client.describe(MODEL_NAME)["customizedMetadata"]["runtime"]
        assert (runtime["engine"], runtime["device"], runtime["precision"]) == ("torch-cuda", "cuda:0", "fp16")
        assert runtime["frames_decoded_on"] == "cuda:0"  # the client's frames: one nvJPEG batch per chunk
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(client.predict_image, payloads))
    for answer, fake_probability in zip(answers, expected, strict=True):
        assert abs(answer.fake_probability - fake_probability) < 0.01
