"""DetectorService in-process: exact outputs from a fixed-weight model, per-item isolation."""

from __future__ import annotations

import math

import pytest
import torch

from handler.checkpoint import build_model, load_model
from handler.runtimes import CudaRuntime, RuntimeInfo, TorchRuntime
from handler.service import LOST_DEVICE_EXIT_CODE, DetectorService, ItemError, device_works
from handler.settings import ModelSettings
from tests.conftest import CONSTANT_LOGITS, constant_checkpoint, frame_bytes, image_bytes

TIER = "unit"


@pytest.fixture(scope="module")
def service() -> DetectorService:
    model, _ = load_model(constant_checkpoint())
    return DetectorService(TorchRuntime(model), ModelSettings(temperature=2.0, alpha=3.0))


def test_fixed_weights_give_exact_answers(service: DetectorService):
    [answer], _ = service.predict([image_bytes()])
    p_fake = 1 / (1 + math.exp(-(CONSTANT_LOGITS[1] - CONSTANT_LOGITS[0]) / 2.0))
    assert answer.logits == pytest.approx(list(CONSTANT_LOGITS), abs=1e-7)
    assert answer.label == "Fake"
    assert answer.fake_probability == pytest.approx(p_fake, abs=1e-7)
    assert answer.adjusted_confidence == pytest.approx(1 / (1 + math.exp(-1.5 / 3.0)), abs=1e-7)


def test_one_bad_item_fails_alone(service: DetectorService):
    results, _ = service.predict([image_bytes(), b"garbage", image_bytes(fmt="PNG")])
    assert isinstance(results[1], ItemError)
    assert results[1].code == 400
    assert results[1].to_json() == {"code": 400, "type": "InvalidImage", "message": results[1].message}
    assert results[0].label == results[2].label == "Fake"


def test_a_batch_of_only_bad_items_runs_no_forward_pass(service: DetectorService):
    results, timing = service.predict([b"", b"not an image"])
    assert [r.code for r in results] == [400, 400]
    assert timing.size == 0 and timing.inference_ms == 0


def test_from_checkpoint_resolves_the_architecture(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(constant_checkpoint(), path)
    service = DetectorService.from_checkpoint(path, ModelSettings())
    assert service.describe()["settings"]["arch"] == "resnet18"
    assert service.runtime.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert service.describe()["runtime"] == {
        "engine": "torch",
        "precision": "fp32",
        "requested": "fp32",
        "fallback": None,
        "device": "cpu",
        "threads": torch.get_num_threads(),  # the process's, split between workers by the handler
        "frames_decoded_on": "cpu",  # a GPU worker decodes the client's plain frames there
    }


def test_batch_metrics_go_through_torchserves_metrics_api(service: DetectorService, caplog):
    """What a worker reports for one batch, as TorchServe's metrics cache (loaded from metrics.yaml) logs it."""
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    from handler.telemetry import DECLARED, METRICS_FILE, Telemetry

    cache = MetricsCacheYamlImpl(config_file_path=str(METRICS_FILE))
    cache.initialize_cache()
    telemetry = Telemetry(cache, "m")
    results, timing = service.predict([image_bytes(), b"garbage", image_bytes(fmt="PNG")])
    with caplog.at_level("INFO"):
        telemetry.record_batch(timing, results)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[METRICS]deepfake_")]
    reported = {line.split("[METRICS]")[1].split(":")[0]: line for line in lines}
    assert set(reported) == {f"{name}.{unit}" for name, (_, unit, _) in DECLARED.items()}
    predictions = reported["deepfake_predictions_total.Count"]
    assert "deepfake_predictions_total.Count:2|#model_name:m,label:Fake|#type:COUNTER" in predictions
    assert ":1|#model_name:m,error_type:InvalidImage|" in reported["deepfake_rejected_images_total.Count"]
    assert "deepfake_batch_size.Count:2|#model_name:m|#type:HISTOGRAM" in reported["deepfake_batch_size.Count"]
    seconds = float(reported["deepfake_inference_seconds_total.Seconds"].split(":")[1].split("|")[0])
    assert seconds == pytest.approx(timing.inference_ms / 1e3, abs=1e-5)  # seconds, not ms
    assert sum(line.startswith("[METRICS]deepfake_fake_probability") for line in lines) == 2  # one per image


def test_plain_frames_decoded_together_on_the_workers_device_answer_as_one_by_one(caplog):
    """A GPU worker's path for the client's frames (one nvJPEG batch per chunk, run here on the CPU): mixed with
    other images and bad items, in chunks of ``max_batch_size``, every answer is the CPU path's, and a frame whose
    header passes but whose data is cut fails alone (its chunk falls back to decoding one by one)."""
    torch.manual_seed(0)
    one_by_one = DetectorService(TorchRuntime(build_model("resnet18")), ModelSettings())
    frames = [frame_bytes(seed) for seed in range(5)]
    cut = frames[4][: len(frames[4]) // 2]
    payloads = [frames[0], image_bytes(size=(224, 224), fmt="PNG"), frames[1], cut, frames[2], b"garbage", frames[3]]
    expected, _ = one_by_one.predict(payloads)
    together = DetectorService(one_by_one.runtime, ModelSettings())
    together.frame_device = torch.device("cpu")
    together.max_batch_size = 3
    with caplog.at_level("WARNING"):
        answers, timing = together.predict(payloads)
    assert "nvJPEG refused a batch of 3 frames" in caplog.text  # the chunk holding the cut frame, only
    assert timing.size == 5
    for answer, reference in zip(answers, expected, strict=True):
        if isinstance(reference, ItemError):
            assert isinstance(answer, ItemError) and answer.to_json() == reference.to_json()
        else:
            assert answer.logits == pytest.approx(reference.logits, abs=1e-5)
    assert len({answer.fake_probability for answer in answers if not isinstance(answer, ItemError)}) == 5


def test_a_worker_whose_device_cannot_decode_frames_decodes_them_on_the_cpu(monkeypatch, caplog):
    """nvJPEG is tried at warm-up: where it fails (no nvJPEG in this CUDA build, say) frames take the CPU path."""
    service = DetectorService(TorchRuntime(load_model(constant_checkpoint())[0]), ModelSettings())
    service.frame_device = torch.device("cpu")
    service.warm_up(2)
    assert service.frame_device == torch.device("cpu")  # it decodes: kept

    def refuse(*_: object) -> None:
        raise RuntimeError("nvJPEG is not available")

    monkeypatch.setattr("handler.service.decode_frames", refuse)
    with caplog.at_level("WARNING"):
        service.warm_up(2)
    assert service.frame_device is None and "frames are decoded on the CPU" in caplog.text
    assert service.describe()["runtime"]["frames_decoded_on"] == "cpu"


class _Exited(Exception):
    """What the injected exit raises: a real worker's process would end there."""


def _exits(service: DetectorService, device_still_works: bool) -> list[int]:
    """Inject whether the device still runs work and an exit that records its code and stops (raises)."""
    codes: list[int] = []

    def exit_process(code: int) -> None:
        codes.append(code)
        raise _Exited(code)

    service.device_works = lambda device: device_still_works  # type: ignore[method-assign]
    service.exit_process = exit_process  # type: ignore[method-assign]
    return codes


class _FaultingModel(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_worker_whose_gpu_no_longer_runs_work_ends_so_that_torchserve_starts_a_fresh_one(monkeypatch, caplog):
    """A fault on the GPU (a kernel reading past a crafted buffer) can lose the process's CUDA context for good;
    the worker then ends (TorchServe starts another, clients retry the batch's 507/500), instead of failing
    every later request. Where the device still works, only that batch fails, as before; the CPU runs work."""
    assert device_works(torch.device("cpu"))
    info = RuntimeInfo("torch-cuda", "bf16", "bf16", device="cpu")
    faulting = DetectorService(CudaRuntime(_FaultingModel(), "cpu", "bf16", info), ModelSettings())
    codes = _exits(faulting, device_still_works=False)
    with caplog.at_level("CRITICAL"), pytest.raises(_Exited):
        faulting.predict([frame_bytes(1)])
    assert codes == [LOST_DEVICE_EXIT_CODE] and "no longer runs work after RuntimeError" in caplog.text
    codes = _exits(faulting, device_still_works=True)  # an out-of-memory, say: the batch fails, the worker stays
    with pytest.raises(RuntimeError, match="illegal memory access"):
        faulting.predict([frame_bytes(1)])
    assert codes == []

    decoding = DetectorService(TorchRuntime(load_model(constant_checkpoint())[0]), ModelSettings())
    decoding.frame_device = torch.device("cpu")  # nvJPEG's path, run on the CPU
    cut = frame_bytes(2)[:1000]  # its header passes as a plain frame, its data fails the batch decode
    codes = _exits(decoding, device_still_works=False)
    with pytest.raises(_Exited):
        decoding.predict([frame_bytes(3), cut])
    assert codes == [LOST_DEVICE_EXIT_CODE]
    codes = _exits(decoding, device_still_works=True)  # the decoder refused the data: the cut frame fails alone
    answers, _ = decoding.predict([frame_bytes(3), cut])
    assert codes == [] and not isinstance(answers[0], ItemError) and isinstance(answers[1], ItemError)

    def fault(*_: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr("handler.service.decode_frames", fault)  # at warm-up: no worker to serve with
    codes = _exits(decoding, device_still_works=False)
    with pytest.raises(_Exited):
        decoding.warm_up(1)
    assert codes == [LOST_DEVICE_EXIT_CODE]
