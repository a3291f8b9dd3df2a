"""Section 14: the GPU, when this machine has one (CUDA).

A worker that TorchServe gives a ``gpu_id`` runs torch on that GPU (handler/runtimes.py: ``CudaRuntime``):
channels-last, cuDNN autotuning, pinned inputs, half precision by autocast. Measured on the first CUDA
device, on the benchmark's ResNet50 (random weights where make benchmark trained none: speed does not
depend on them):

- in-process: the runtime's call as a worker makes it (a host batch in, logits out, both copies
  included) per precision at batches 8, 16 and 32, and the worker's whole path for a batch of the
  client's JPEG frames (``DetectorService.predict``: decoding them together on the GPU, as a GPU worker
  does, or one by one on the CPU; then that call);
- decoding a batch of those frames: the handler's CPU path against torchvision's nvJPEG batch decode on
  the GPU (``decode_jpeg(device="cuda")``), and how far their pixels and answers differ;
- served: TorchServe on that GPU at batchSize 8, 16 and 32 (2 x batch concurrent clients, one frame per
  request, as section 2's 16 for 8, split over CLIENT_PROCESSES processes), with a second worker on the same
  GPU at 32, and a lone request.

Without CUDA (every CI machine) the section records why, and the report says the figures await a GPU.
It needs no OpenVINO: a GPU worker runs the checkpoint, so its archive carries no IR (``gpu_archive``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handler.checkpoint import load_model, read_state_dict
from handler.preprocessing import decode_frames, decode_image, to_model_input
from handler.runtimes import AUTOCAST_DTYPES, GPU_PRECISION, CudaRuntime, RuntimeInfo
from handler.service import DetectorService
from scripts.bench.benchmark.harness import MODEL_NAME, Subject, load, served_runtime, serving, timed
from scripts.operations.archives import DEFAULT_MAX_BATCH_DELAY_MS, model_config, pack_archive
from scripts.operations.precision import DEFAULT_PRECISION

BATCHES = (8, 16, 32)
SERVED_LAYOUTS = ((8, 1), (16, 1), (32, 1), (32, 2))  # (batchSize, workers on the one GPU)
DEVICE = "cuda:0"
GPU_DEFAULT = GPU_PRECISION[DEFAULT_PRECISION]  # what the default archive runs on a GPU (fp16 for int8)
CLIENTS_SATURATED = 0.9  # cores per client process: the load generator is then near its GIL's limit
CLIENT_PROCESSES = 4  # the crowd's clients split over processes: in one, its GIL bounded the rate (~1 core, run 3)
SERVED_REQUESTS = 3000  # per load level: a few seconds at a GPU's rate (section 2's 400 would be a fraction of one)


def cuda_missing() -> str | None:
    """Why this machine cannot run the section (None: it can)."""
    if not torch.cuda.is_available():
        return "no CUDA device on this machine (torch.cuda.is_available() is False)"
    return None


def gpu_archive(subject: Subject, out: Path, precision: str, batch_size: int, workers: int) -> Path:
    """An archive for GPU workers: the checkpoint, the handler and its settings, and no OpenVINO IR (a GPU
    worker runs torch; a CPU worker given it converts the checkpoint at start). It carries no check images,
    so half precision runs unchecked (the worker logs it): the weights may be random, and a random model's
    answers cannot show agreement."""
    settings = dataclasses.replace(subject.settings, precision=precision)
    config = model_config(settings, batch_size, DEFAULT_MAX_BATCH_DELAY_MS, workers)
    return pack_archive(read_state_dict(subject.weights), config, MODEL_NAME, out)


def rate(batch: int, times: list[float]) -> dict[str, float]:
    return {"images_per_s": batch * len(times) / sum(times), "p50_ms": statistics.median(times) * 1e3}


def gpu_runtime(model: torch.nn.Module, precision: str) -> CudaRuntime:
    info = RuntimeInfo("torch-cuda", precision, precision, device=DEVICE)
    return CudaRuntime(copy.deepcopy(model), DEVICE, precision, info)


def in_process(subject: Subject, payloads: list[bytes], iterations: int) -> dict[str, Any]:
    """The runtime's call per precision and batch, and the worker's whole path (decode + call) per batch: the
    client's frames decoded together on the GPU (what a GPU worker does), and one by one on the CPU. Each timed
    call ends synchronised: the runtime copies its logits to the host."""
    settings = subject.settings
    model = load_model(subject.weights, arch=settings.arch)[0]
    frames = [to_model_input(decode_image(p), settings.mean, settings.std, settings.image_size) for p in payloads]
    inputs = {b: torch.stack(frames[:b]).numpy() for b in BATCHES}
    calls: dict[str, dict[str, Any]] = {}
    for precision in AUTOCAST_DTYPES:
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        runtime = gpu_runtime(model, precision)
        calls[precision] = {str(b): rate(b, timed(lambda b=b, r=runtime: r(inputs[b]), iterations)) for b in BATCHES}
        del runtime
        torch.cuda.empty_cache()
    whole = {}
    for decoder in ("nvjpeg", "cpu"):  # the worker's path (frames decoded on the GPU), and the CPU's, side by side
        service = DetectorService(gpu_runtime(model, GPU_DEFAULT), subject.settings)
        service.max_batch_size = max(BATCHES)  # one forward pass per batch, as a worker of that batchSize makes
        if decoder == "cpu":
            service.frame_device = None
        whole[decoder] = {
            str(b): rate(b, timed(lambda b=b, s=service: s.predict(payloads[:b]), max(iterations // 2, 3)))
            for b in BATCHES
        }
    return {"call": calls, "with_decode": whole}


def decoding(subject: Subject, payloads: list[bytes], iterations: int) -> dict[str, Any]:
    """A batch of the client's frames decoded to the model's input: the handler's CPU path against nvJPEG on
    the GPU (torchvision, one batched call, then normalised there), and how far they differ."""
    settings = subject.settings
    model = load_model(subject.weights, arch=settings.arch)[0]
    service = DetectorService(gpu_runtime(model, "fp32"), settings)

    def on_gpu(batch: list[bytes]) -> torch.Tensor:
        result = decode_frames(batch, torch.device(DEVICE), settings.mean, settings.std)
        torch.cuda.synchronize()
        return result

    def on_cpu(batch: list[bytes]) -> np.ndarray:
        return np.stack([service.decode(p).numpy() for p in batch])

    rows = {}
    for b in BATCHES:
        batch = payloads[:b]
        rows[str(b)] = {
            "cpu_ms": statistics.median(timed(lambda batch=batch: on_cpu(batch), iterations)) * 1e3,
            "gpu_ms": statistics.median(timed(lambda batch=batch: on_gpu(batch), iterations)) * 1e3,
        }
    batch = payloads[: max(BATCHES)]
    cpu_inputs, gpu_inputs = torch.from_numpy(on_cpu(batch)), on_gpu(batch).cpu()
    std = torch.tensor(settings.std).view(1, 3, 1, 1) * 255  # back to 0..255 pixel levels
    levels = ((cpu_inputs - gpu_inputs) * std).abs()
    fp32 = service.runtime
    fake = settings.fake_index
    probabilities = [torch.softmax(torch.from_numpy(fp32(x.numpy())), -1)[:, fake] for x in (cpu_inputs, gpu_inputs)]
    return {
        "batches": rows,
        "pixel_levels_max_diff": float(levels.max()),
        "pixel_levels_mean_diff": float(levels.mean()),
        "fake_probability_mean_abs_diff": float((probabilities[0] - probabilities[1]).abs().mean()),
        "images": len(batch),
    }


def served(subject: Subject, payloads: list[bytes], workdir: Path, total: int) -> dict[str, Any]:
    """TorchServe on the GPU per (batchSize, workers): 2 x batch clients, then a lone request."""
    rows = []
    for batch, workers in SERVED_LAYOUTS:
        name = f"b{batch}w{workers}"
        archive = gpu_archive(subject, workdir / f"mar_{name}", DEFAULT_PRECISION, batch, workers)
        with serving(archive, workdir / f"ts_{name}") as (ts, cold_start):
            runtime = served_runtime(ts)
            rows.append(
                {
                    "batch_size": batch,
                    "workers": workers,
                    "cold_start_s": cold_start,
                    "runtime": runtime,
                    "crowd": load(ts, payloads, 2 * batch, total, processes=CLIENT_PROCESSES),
                    "lone": load(ts, payloads, 1, max(total // 10, 20)),
                }
            )
    return {"rows": rows}


def gpu(subject: Subject, payloads: list[bytes], workdir: Path, total: int, quick: bool) -> dict[str, Any]:
    """Section 14, or why it cannot run here."""
    if (missing := cuda_missing()) is not None:
        return {"available": False, "reason": missing}
    properties = torch.cuda.get_device_properties(DEVICE)
    iterations = 5 if quick else 50
    return {
        "available": True,
        "device": properties.name,
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cpus": os.cpu_count(),
        "in_process": in_process(subject, payloads, iterations),
        "decoding": decoding(subject, payloads, iterations),
        "served": served(subject, payloads, workdir, 100 if quick else max(total, SERVED_REQUESTS)),
    }


def batch_other_ms(row: dict[str, Any]) -> float:
    """A served row's milliseconds per batch outside decoding and inference (one worker's share of the time)."""
    crowd = row["crowd"]
    period = 1e3 * row["workers"] * crowd.get("mean_batch", nan) / crowd["images_per_s"]
    return period - crowd.get("decode_ms_per_batch", nan) - crowd.get("inference_ms_per_batch", nan)


def _cores_per_client_process(row: dict[str, Any]) -> float:
    return row["crowd"]["cores"]["clients"] / row["crowd"].get("processes", 1)


def _processes(g: dict[str, Any]) -> str:
    """How many processes the served rows' clients ran in (one before crowds were split: run 3 and earlier)."""
    counts = sorted({row["crowd"].get("processes", 1) for row in g["served"]["rows"]})
    return " or ".join(map(str, counts)) + (" client process" if counts == [1] else " client processes")


def _cores(load_result: dict[str, Any]) -> str:
    cores = load_result["cores"]
    return f"{cores['worker']:.2f} / {cores['frontend']:.2f} / {cores['clients']:.2f}"


def gpu_markdown(g: dict[str, Any]) -> str:
    lines = ["## 14. The GPU", ""]
    if not g.get("available"):
        lines.append(
            f"Not measured: {g.get('reason', 'this run had no GPU section')}. The GPU path is tested on CPU-only "
            "machines on the CPU alone (its selection logic, its code path in bf16, its half-precision check, its "
            "frame decoding); its figures await a machine with a CUDA GPU (`python -m scripts.bench.benchmark "
            "--only gpu` there)."
        )
        return "\n".join(lines)
    calls, whole = g["in_process"]["call"], g["in_process"]["with_decode"]
    batches = [str(b) for b in BATCHES]
    lines += [
        f"Measured on one {g['device']} ({g['memory_gib']:g} GiB) with {g['cpus']} CPU cores: torch {g['torch']}, "
        f"CUDA {g['cuda']}, cuDNN {g['cudnn']}. Without a GPU this section records why and nothing else.",
        "",
        "In-process, the runtime's call as a worker makes it (a host batch of float32 inputs in, logits out, both "
        "copies included), images/s:",
        "",
        "| precision | " + " | ".join(f"batch {b}" for b in batches) + " | p50 ms at batch 8 |",
        "| --- | " + " | ".join("---" for _ in batches) + " | --- |",
    ]
    lines += [
        f"| {precision} | " + " | ".join(f"{rows[b]['images_per_s']:.0f}" for b in batches) + f" | "
        f"{rows[batches[0]]['p50_ms']:.2f} |"
        for precision, rows in calls.items()
    ]
    decoders = {"nvjpeg": "together on the GPU (nvJPEG: a GPU worker's path)", "cpu": "one by one on the CPU"}
    lines += [
        f"| {GPU_DEFAULT}, the JPEG frames decoded {label}, then the call (`DetectorService.predict`) | "
        + " | ".join(f"{whole[decoder][b]['images_per_s']:.0f}" for b in batches)
        + f" | {whole[decoder][batches[0]]['p50_ms']:.2f} |"
        for decoder, label in decoders.items()
    ]
    lines += [
        "",
        f"Served: TorchServe on that GPU, the default ({DEFAULT_PRECISION}) archive, which a GPU worker runs in "
        f"{GPU_DEFAULT}; 2 x batchSize concurrent clients of one 224 px frame per request ({_processes(g)}), then a "
        "lone request. "
        "The ratios divide the served rate by the in-process rate at the same batch: of the runtime's call, and "
        "of the whole path with the frames decoded on the GPU.",
        "",
        "| batchSize | workers | runs | images/s | / call | / with decode | p50 ms | mean (largest) batch | decode ms "
        "/ batch | inference ms / batch | other ms / batch | cores: worker / frontend / clients | lone p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in g["served"]["rows"]:
        b, crowd, runtime = str(row["batch_size"]), row["crowd"], row["runtime"]
        served_rate = crowd["images_per_s"]
        call = calls.get(runtime.get("precision", GPU_DEFAULT), calls[GPU_DEFAULT])[b]["images_per_s"]
        decode, inference = crowd.get("decode_ms_per_batch", nan), crowd.get("inference_ms_per_batch", nan)
        lines.append(
            f"| {b} | {row['workers']} | {runtime.get('precision', '?')} on {runtime.get('device', '?')} | "
            f"{served_rate:.0f} | {served_rate / call:.0%} | {served_rate / whole['nvjpeg'][b]['images_per_s']:.0%} | "
            f"{crowd['p50_ms']:.1f} | {crowd.get('mean_batch', nan):.1f} ({crowd['max_batch']}) | {decode:.1f} | "
            f"{inference:.1f} | {batch_other_ms(row):.1f} | {_cores(crowd)} | {row['lone']['p50_ms']:.1f} |"
        )
    lines += [
        "",
        "Other ms / batch: a worker's time per batch (its workers x mean batch / images/s) less the decoding and "
        "inference it logs: TorchServe's passing of requests and answers between its frontend and the worker, the "
        "handler's reading and answering of each request, and waiting for the next batch (up to maxBatchDelay, "
        f"{DEFAULT_MAX_BATCH_DELAY_MS} ms). Inference ms / batch is the forward pass as the worker times it, against "
        "the in-process call above at the same batch.",
    ]
    busiest = max(g["served"]["rows"], key=_cores_per_client_process, default=None)
    if busiest is not None and _cores_per_client_process(busiest) >= CLIENTS_SATURATED:
        lines += [
            "",
            f"Each client process's threads share one GIL. At batchSize {busiest['batch_size']} x "
            f"{busiest['workers']} worker(s) the clients ({_processes(g)}) used "
            f"{busiest['crowd']['cores']['clients']:.2f} cores, close to one per process, and the mean batch was "
            f"{busiest['crowd'].get('mean_batch', nan):.1f}: there the load generator, not only the server, bounds "
            "the rate, which is then a lower bound.",
        ]
    d = g["decoding"]
    rows = d["batches"]
    lines += [
        "",
        "Decoding a batch of the client's 224 px JPEG frames into the model's input: the handler's path on the CPU "
        "(Pillow, one image after another on one core) against torchvision's nvJPEG batch decode on the GPU, "
        "normalised there:",
        "",
        "| batch | CPU ms | GPU ms | CPU / GPU |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {b} | {r['cpu_ms']:.2f} | {r['gpu_ms']:.2f} | {r['cpu_ms'] / r['gpu_ms']:.1f}x |" for b, r in rows.items()
    ]
    lines += [
        "",
        f"On {d['images']} frames the two decoders' pixels differ by up to {d['pixel_levels_max_diff']:.0f} levels "
        f"(mean {d['pixel_levels_mean_diff']:.2f}), and fp32's fake probability by "
        f"{d['fake_probability_mean_abs_diff']:.4f} on average.",
    ]
    return "\n".join(lines)
