"""Benchmark the deployment on this machine, side by side in one run, and write a report with targets.

    python -m scripts.benchmark --report docs/benchmark.md          # make benchmark
    python -m scripts.benchmark --quick --report /tmp/quick.md      # smoke run (a test executes it)

Every server is a real TorchServe on free loopback ports, started from an archive built here, one at
a time. The model is a ResNet50 trained on the demo data by this script (cached in artifacts/bench;
the weights matter for the agreement figures, not for speed). Measured:

1. the in-process ceiling per mode: a tight loop over batches of 8 in a fresh process (torch eager
   fp32 and bf16 autocast beside the OpenVINO modes, which is why OpenVINO runs every mode);
2. each mode served, with 16 concurrent clients sending distinct 224x224 JPEG frames, and a lone
   request; the decode and inference time per batch the worker logs;
3. TorchServe's stock ``ImageClassifier`` (a ``topk = 2`` subclass) on the same weights, inputs and
   batch settings;
4. the original app's path: one image at a time, torch fp32, in-process;
5. a 60 s 720p30 H.264 clip analysed at 2 fps by ``deepfake-detect`` end to end, against the original
   app's path (frames extracted to JPEG files, then classified one by one);
6. cold start: TorchServe start to worker READY per mode;
7. agreement of every mode with fp32 on held-out demo images, for the demo ResNet18 and the ResNet50;
plus maxBatchDelay for the default mode. ``--quick`` runs every section on a random ResNet18 with
small counts (numbers meaningless, code paths exercised).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import requests
import torch
import yaml
from PIL import Image

from deepfake_client import encode_frame, sample_frames
from deepfake_contract import NATIVE, OIP, oip_request
from handler.checkpoint import RESNET_LAYOUTS, build_model, load_model
from handler.faces import detector_for
from handler.preprocessing import decode_image, to_model_input
from handler.settings import HALF_MEAN, HALF_STD, PRECISIONS, ModelSettings
from scripts.archive import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FACE_WORKERS,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_WORKERS,
    build_archive,
    load_archive,
)
from scripts.face_data import face_frames, photo
from scripts.precision import DEFAULT_PRECISION, build_runtime
from scripts.serve import Ports, TorchServe, observed_batches

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "artifacts" / "demo"
BENCH = REPO_ROOT / "artifacts" / "bench"
DEMO_R18 = DEMO / "model" / "best_ResNet18.pth"
MODEL_NAME = "deepfake"
CONCURRENCY = 16  # two batches of 8 in flight: the next one fills while one runs

TARGETS = {
    "served_images_per_s": {"int8": 90.0, "bf16": 45.0, "fp32": 24.0},
    "served_vs_in_process": 0.90,
    "default_vs_stock": 4.0,
    "fp32_vs_stock": 1.5,
    "video_seconds": 4.0,
    "video_vs_original": 4.0,
    "cold_start_s": 15.0,
    "face_recall": 1.0,
    "face_video_vs_full": 3.0,
    "scan_vs_crowd": 0.90,
}
BATCH_LINE = re.compile(r"Batch of (\d+): decode ([\d.]+) ms, inference ([\d.]+) ms")


# --- inputs ---------------------------------------------------------------------------------------
def write_video(
    path: Path, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 30, face: bool = False
) -> Path:
    """A panning textured scene, H.264: decoding costs what a real clip of that size costs. ``face``: a
    real face (scikit-image's astronaut, 384 px) moves across it, for face-crop mode."""
    rng = np.random.default_rng(0)
    base = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    person = np.asarray(photo("astronaut").resize((384, 384))) if face else None
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast"}
        for i in range(round(seconds * fps)):
            pixels = np.roll(base, i * 4, axis=1)
            if person is not None:
                x = (i * 3) % (size[0] - person.shape[1])
                pixels = pixels.copy()
                pixels[100 : 100 + person.shape[0], x : x + person.shape[1]] = person
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_images(count: int) -> list[Path]:
    """Held-out demo images (never trained or calibrated on), real and fake alternating."""
    real = sorted((DEMO / "data" / "images" / "test" / "real").glob("*.jpg"))
    fake = sorted((DEMO / "data" / "images" / "test" / "fake").glob("*.jpg"))
    return [p for pair in zip(real, fake, strict=False) for p in pair][:count]


def frame_payloads(count: int, quick: bool) -> list[bytes]:
    """Distinct 224x224 JPEG frames, as the client sends them."""
    if quick:
        from scripts.make_demo_data import make_image

        return [encode_frame(make_image([5, i], fake=i % 2 == 1)) for i in range(count)]
    return [encode_frame(Image.open(p)) for p in test_images(count)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- models -----------------------------------------------------------------------------------------
@dataclass
class Subject:
    """The checkpoint under test and how to read it."""

    arch: str
    weights: Path
    settings: ModelSettings


def demo_settings(weights: Path) -> ModelSettings:
    from scripts.archive import settings_from_files, sidecar_files

    return ModelSettings.from_mapping(settings_from_files(sidecar_files(weights)))


def ensure_demo() -> None:
    from scripts import build_demo

    if build_demo.main(["--out", str(DEMO)]) != 0:
        raise SystemExit("benchmark: building the demo failed")


R50_EPOCHS = 8  # the demo's recipe, trained to convergence: 4 epochs left it at 95% validation accuracy


def ensure_resnet50() -> Path:
    """A ResNet50 trained on the demo data with the demo's recipe, for longer (cached)."""
    from scripts import build_demo, train

    out = BENCH / "resnet50"
    weights = out / f"{train.CHECKPOINT_NAMES['resnet50']}.pth"
    if not weights.exists():
        print("[bench] training a ResNet50 on the demo data (cached in artifacts/bench)", flush=True)
        if train.main(build_demo.train_arguments(DEMO / "data", out, "resnet50", R50_EPOCHS)) != 0:
            raise SystemExit("benchmark: training the ResNet50 failed")
    return weights


def quick_subject(workdir: Path) -> Subject:
    torch.manual_seed(0)
    weights = workdir / "r18.pth"
    torch.save(build_model("resnet18").state_dict(), weights)
    return Subject("resnet18", weights, ModelSettings(mean=HALF_MEAN, std=HALF_STD))


# --- servers ----------------------------------------------------------------------------------------
def with_model_config(archive: Path, out: Path, handler: dict[str, Any] | None = None, **changes: Any) -> Path:
    """A copy of ``archive`` whose model-config.yaml has ``changes`` (e.g. another maxBatchDelay), and
    ``handler`` settings changed (e.g. crop: face): the same weights and runtime otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "model-config.yaml":
                config = {**yaml.safe_load(data), **changes}
                config["handler"] = {**config.get("handler", {}), **(handler or {})}
                data = yaml.safe_dump(config).encode()
            target.writestr(item, data)
    return out


STOCK_MODEL = '''"""torchvision {arch} with a 2-class head, for TorchServe's --model-file."""
from torchvision.models.resnet import {block}, ResNet


class StockResNet(ResNet):
    def __init__(self):
        super().__init__({block}, {layers}, num_classes=2)
'''
STOCK_HANDLER = '''"""TorchServe's stock image classifier, answering both classes."""
from ts.torch_handler.image_classifier import ImageClassifier


class TwoClassImageClassifier(ImageClassifier):
    topk = 2
'''


def stock_archive(subject: Subject, store: Path, max_batch_delay: int) -> Path:
    """The peer a user would try first: ImageClassifier on the same weights and batch settings."""
    layers, kind = RESNET_LAYOUTS[subject.arch]
    block = "Bottleneck" if kind == "bottleneck" else "BasicBlock"
    with tempfile.TemporaryDirectory(prefix="stock-") as tmp:
        stage = Path(tmp)
        (stage / "stock_model.py").write_text(STOCK_MODEL.format(arch=subject.arch, block=block, layers=list(layers)))
        (stage / "stock_handler.py").write_text(STOCK_HANDLER)
        torch.save(load_model(subject.weights)[0].state_dict(), stage / "weights.pth")
        config = {"minWorkers": 1, "maxWorkers": 1, "batchSize": DEFAULT_BATCH_SIZE, "maxBatchDelay": max_batch_delay}
        (stage / "model-config.yaml").write_text(yaml.safe_dump(config))
        store.mkdir(parents=True, exist_ok=True)
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        command = [
            str(archiver), "--model-name", MODEL_NAME, "--version", "1.0",
            "--model-file", str(stage / "stock_model.py"), "--serialized-file", str(stage / "weights.pth"),
            "--handler", str(stage / "stock_handler.py"), "--config-file", str(stage / "model-config.yaml"),
            "--export-path", str(store), "--force",
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return store / f"{MODEL_NAME}.mar"


@contextlib.contextmanager
def serving(archive: Path, workdir: Path) -> Iterator[tuple[TorchServe, float]]:
    """TorchServe serving ``archive`` alone; yields it and the seconds from start to worker READY."""
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    shutil.copy2(archive, store / f"{MODEL_NAME}.mar")
    ts = TorchServe(workdir / "runtime", store, ports=Ports.free())
    started = time.perf_counter()
    ts.start(timeout=300)
    try:
        yield ts, time.perf_counter() - started
    finally:
        ts.stop()


def worker_rss_mb(ts: TorchServe) -> float:
    """Resident memory of the model worker processes (not the Java frontend)."""
    root = psutil.Process(ts.pid())
    workers = [p for p in root.children(recursive=True) if "java" not in p.name()]
    return sum(p.memory_info().rss for p in workers) / 2**20


def batch_times(ts: TorchServe, offset: int) -> dict[str, float]:
    """Mean decode and inference milliseconds per batch, from the worker's log since ``offset``."""
    log = ts.log_dir / "model_log.log"
    text = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
    rows = [(int(n), float(d), float(i)) for n, d, i in BATCH_LINE.findall(text) if int(n) > 0]
    if not rows:
        return {}
    return {
        "mean_batch": statistics.mean(r[0] for r in rows),
        "decode_ms_per_batch": statistics.mean(r[1] for r in rows),
        "inference_ms_per_batch": statistics.mean(r[2] for r in rows),
        "inference_ms_total": sum(r[2] for r in rows),
    }


def log_size(ts: TorchServe) -> int:
    log = ts.log_dir / "model_log.log"
    return log.stat().st_size if log.exists() else 0


def load(
    ts: TorchServe, payloads: list[bytes], concurrency: int, total: int, protocol: str = NATIVE, per_request: int = 1
) -> dict[str, Any]:
    """``total`` requests from ``concurrency`` clients, cycling over distinct payloads, in ``protocol``'s
    wire format (native image bytes, or ``per_request`` images per Open Inference Protocol request);
    ``images_per_s`` counts images."""
    if protocol == OIP:
        url = f"{ts.inference_url}/v2/models/{MODEL_NAME}/infer"
        packs = [[payloads[(i + j) % len(payloads)] for j in range(per_request)] for i in range(len(payloads))]
        bodies = [json.dumps(oip_request(pack)).encode() for pack in packs]
        content_type = "application/json"
    else:
        url, bodies, content_type = f"{ts.inference_url}/predictions/{MODEL_NAME}", payloads, "image/jpeg"
    headers = {"Authorization": f"Bearer {ts.keys()['inference']}", "Content-Type": content_type}
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency + 2))
    latencies: list[float] = []
    ids: set[str] = set()

    def one(index: int) -> None:
        started = time.perf_counter()
        response = session.post(url, data=bodies[index % len(bodies)], headers=headers, timeout=300)
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        ids.add(response.headers["x-request-id"])

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: connections, caches
        list(pool.map(one, range(concurrency * 2)))
    latencies.clear()
    ids.clear()
    offset = log_size(ts)
    cpu_before = cpu_seconds(ts)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(ts)
    ts_log = (ts.log_dir / "ts_log.log").read_text(errors="replace")
    sizes = [len(b & ids) for b in observed_batches(ts_log, MODEL_NAME) if b & ids]
    return {
        "concurrency": concurrency,
        "requests": total,
        "images_per_s": total * per_request / elapsed,
        "per_request": per_request,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_batch": max(sizes, default=0),
        "cores": {k: (cpu_after[k] - cpu_before[k]) / elapsed for k in cpu_after},
        **batch_times(ts, offset),
    }


def cpu_seconds(ts: TorchServe) -> dict[str, float]:
    """CPU seconds used so far by the model worker, TorchServe's Java frontend and this process (the clients)."""
    root = psutil.Process(ts.pid())
    used = {"worker": 0.0, "frontend": 0.0}
    for process in [root, *root.children(recursive=True)]:
        times = process.cpu_times()
        used["frontend" if "java" in process.name() else "worker"] += times.user + times.system
    own = psutil.Process().cpu_times()
    return {**used, "clients": own.user + own.system}


# --- in-process rows (each in a fresh process, so that its memory is its own) ---------------------
def _ceiling(kind: str, source: str, batch: int, iterations: int) -> dict[str, float]:
    torch.set_num_threads(os.cpu_count() or 1)
    inputs = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    if kind == "archive":
        run = load_archive(Path(source)).runtime
    else:
        model = load_model(source)[0].to(memory_format=torch.channels_last)
        tensor = torch.from_numpy(inputs).contiguous(memory_format=torch.channels_last)

        def run(_: np.ndarray) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "torch-bf16"):
                model(tensor)

    for _ in range(3):
        run(inputs)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - started)
    return {
        "images_per_s": batch * len(times) / sum(times),
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
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


def in_fresh_process(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a new interpreter (JSON in and out), so that its memory is its own.

    A plain subprocess: a ``multiprocessing`` spawn child ran OpenVINO at half speed here.
    """
    code = (
        "import json, sys; from scripts import benchmark; "
        f"print(json.dumps(benchmark.{function.__name__}(*json.loads(sys.stdin.read()))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(args), capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


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
        logits = service.logits(batch).double() / service.settings.temperature
        probabilities[name] = torch.softmax(logits, -1)[:, service.settings.fake_index]
    diff = (probabilities["exact"] - probabilities["draft"]).abs()
    result["mean_abs_fake_probability_diff"] = float(diff.mean())
    result["max_abs_fake_probability_diff"] = float(diff.max())
    result["label_agreement"] = float(
        ((probabilities["exact"] > 0.5) == (probabilities["draft"] > 0.5)).double().mean()
    )
    return result


# --- video ------------------------------------------------------------------------------------------
def video_ours(ts: TorchServe, clip: Path, workdir: Path, per_request: int = 1) -> dict[str, float]:
    """``deepfake-detect video`` end to end, plus its two halves measured apart."""
    command = [
        str(Path(sys.executable).with_name("deepfake-detect")), "video", str(clip), "--json", "--quiet",
        "--url", ts.inference_url, "--management-url", ts.management_url, "--key-file", str(ts.key_file),
        "--frames-per-request", str(per_request),
    ]  # fmt: skip
    offset = log_size(ts)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=True)
    end_to_end = time.perf_counter() - started
    frames = len(json.loads(result.stdout)["frames"])
    inference_ms = batch_times(ts, offset).get("inference_ms_total", float("nan"))
    started = time.perf_counter()
    decoded = sum(1 for sample in sample_frames(clip, 2.0) if encode_frame(sample.image))
    decode_s = time.perf_counter() - started
    assert decoded == frames
    return {"frames": frames, "end_to_end_s": end_to_end, "decode_s": decode_s, "inference_s": inference_ms / 1e3}


def video_original(subject: Subject, clip: Path, workdir: Path) -> dict[str, float]:
    """Frames at 2 fps extracted to JPEG files, then classified one at a time (torch fp32)."""
    frames_dir = workdir / "frames"
    shutil.rmtree(frames_dir, ignore_errors=True)
    frames_dir.mkdir()
    started = time.perf_counter()
    for sample in sample_frames(clip, 2.0):
        sample.image.save(frames_dir / f"frame_{sample.index:05d}.jpg", quality=95)
    extract_s = time.perf_counter() - started
    payloads = [p.read_bytes() for p in sorted(frames_dir.glob("*.jpg"))]
    model = load_model(subject.weights)[0]
    started = time.perf_counter()
    for payload in payloads:
        classify_like_the_original_app(model, payload, subject.settings.mean, subject.settings.std)
    classify_s = time.perf_counter() - started
    return {
        "frames": len(payloads),
        "end_to_end_s": extract_s + classify_s,
        "decode_s": extract_s,
        "inference_s": classify_s,
    }


# --- face-crop mode -----------------------------------------------------------------------------------
def _close(box: tuple[float, ...], expected: tuple[float, ...], tolerance: float = 10.0) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))


def face_detection(settings: ModelSettings, count: int) -> dict[str, float]:
    """The handler's detector on 720p frames with a real face at a known place (and some without)."""
    detector = detector_for(settings)
    faces = found = false = no_face_images = 0
    times = []
    for image, box in face_frames(count):
        started = time.perf_counter()
        detected = detector.detect(image)
        times.append(time.perf_counter() - started)
        hits = [face for face in detected if box is not None and _close(face.box, box)]
        false += len(detected) - len(hits[:1])
        faces += box is not None
        no_face_images += box is None
        found += bool(hits)
    return {
        "faces": faces,
        "found": found,
        "recall": found / faces,
        "no_face_images": no_face_images,
        "false_faces": false,
        "ms_per_720p_frame": statistics.mean(times) * 1e3,
    }


FACE_MODES = {
    "full": "full mode",
    "face": f"face mode, {DEFAULT_FACE_WORKERS} workers (default)",
    "face_1_worker": "face mode, 1 worker",
}


def face_mode(
    subject: Subject, archive: Path, workdir: Path, seconds: float, requests_total: int, quick: bool
) -> dict[str, Any]:
    """Face-crop mode next to full mode, same weights and runtime: detection quality, 720p images served,
    a 60 s 720p clip with a face end to end, and the detection done by the client instead."""
    results: dict[str, Any] = {"detection": face_detection(subject.settings, 12 if quick else 48)}
    payloads = []
    for image, box in face_frames(16 if quick else 32):
        if box is not None:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            payloads.append(buffer.getvalue())
    face, workers = {"crop": "face"}, DEFAULT_FACE_WORKERS
    archives = {  # FACE_MODES: the default face archive, and one worker of all the cores for comparison
        "full": archive,
        "face": with_model_config(
            archive, workdir / "mar_face" / archive.name, face, minWorkers=workers, maxWorkers=workers
        ),
        "face_1_worker": with_model_config(
            archive, workdir / "mar_face1" / archive.name, face, minWorkers=1, maxWorkers=1
        ),
    }
    clip = write_video(workdir / "face_clip.mp4", seconds, face=True)
    results["images_720p"], results["video"] = {}, {}
    for mode, path in archives.items():
        with serving(path, workdir / f"ts_crop_{mode}") as (ts, _):
            results["images_720p"][mode] = load(ts, payloads, CONCURRENCY, requests_total)
            results["video"][mode] = video_ours(ts, clip, workdir)
    # the alternative: the client finds the faces itself (same detector) and sends 224 px crops
    detector = detector_for(subject.settings)
    started = time.perf_counter()
    for sample in sample_frames(clip, 2.0):
        detector.detect(sample.image)
    results["video"]["client_detection_s"] = time.perf_counter() - started
    return results


# --- the run ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torchserve": importlib.metadata.version("torchserve"),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "quick": quick,
        "workers": DEFAULT_WORKERS,  # full mode's worker count per archive (face mode's: section 8)
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        if quick:
            subject = quick_subject(workdir)
            agreement_subjects = {"resnet18 (random)": subject}
        else:
            ensure_demo()
            r50 = ensure_resnet50()
            subject = Subject("resnet50", r50, demo_settings(r50))
            agreement_subjects = {
                "ResNet18 demo": Subject("resnet18", DEMO_R18, demo_settings(DEMO_R18)),
                "ResNet50 demo-trained": subject,
            }
        results["model"] = subject.arch
        payloads = frame_payloads(16 if quick else 64, quick)
        requests_total = 48 if quick else args.requests
        print(f"[bench] {subject.arch}: building one archive per mode", flush=True)
        archives = {}
        for mode in PRECISIONS:
            path, settings = build_archive(
                subject.weights, subject.settings, MODEL_NAME, workdir / f"mar_{mode}", precision=mode
            )
            archives[mode] = (path, settings)

        # 7. agreement with fp32 per mode (from the archives' own checks, and the demo ResNet18's)
        results["agreement"] = {}
        for label, item in agreement_subjects.items():
            rows = {}
            for mode in ("bf16", "int8"):
                if item is subject:
                    report = archives[mode][1].extra["precision_report"]
                else:
                    model = load_model(item.weights)[0]
                    report = build_runtime(
                        model, item.settings, workdir / f"agree_{mode}", mode, log=lambda _: None
                    ).report
                rows[mode] = report["agreement"][mode]
            results["agreement"][label] = rows

        # 1. in-process ceiling per mode, and the torch alternatives
        iterations = 4 if quick else 25
        print("[bench] in-process ceilings", flush=True)
        results["ceiling"] = {
            f"openvino {mode}": in_fresh_process(_ceiling, "archive", str(archives[mode][0]), 8, iterations)
            for mode in PRECISIONS
        }
        for kind in ("torch-fp32", "torch-bf16"):
            results["ceiling"][kind.replace("-", " eager ")] = in_fresh_process(
                _ceiling, kind, str(subject.weights), 8, iterations
            )

        # 4. the original app's path, in-process
        frames_dir = workdir / "frames224"
        frames_dir.mkdir()
        for i, payload in enumerate(payloads):
            (frames_dir / f"{i:03d}.jpg").write_bytes(payload)
        frame_paths = [str(p) for p in sorted(frames_dir.glob("*.jpg"))]
        results["original_app"] = in_fresh_process(
            _original_app, str(subject.weights), subject.settings.mean, subject.settings.std, frame_paths
        )

        # large uploads: the opt-in JPEG draft decode against the exact one
        sources = frame_paths[:8] if quick else [str(p) for p in test_images(64)]
        results["jpeg_draft"] = in_fresh_process(
            _jpeg_draft, str(subject.weights), subject.settings.to_mapping(), sources, (3840, 2160)
        )

        # 2 + 6. served per mode: crowd, lone request, cold start, worker memory
        results["served"] = {}
        for mode in PRECISIONS:
            print(f"[bench] served {mode}", flush=True)
            with serving(archives[mode][0], workdir / f"ts_{mode}") as (ts, cold_start):
                results["served"][mode] = {
                    "cold_start_s": cold_start,
                    "crowd": load(ts, payloads, CONCURRENCY, requests_total),
                    "lone": load(ts, payloads, 1, requests_total // 3),
                    "worker_rss_mb": worker_rss_mb(ts),
                }
                if mode == DEFAULT_PRECISION:  # the same frames over the Open Inference Protocol
                    results["served"][mode]["crowd_oip"] = load(ts, payloads, CONCURRENCY, requests_total, OIP)

        # 3. the stock handler, same weights, inputs and batch settings
        print("[bench] stock ImageClassifier", flush=True)
        stock = stock_archive(subject, workdir / "mar_stock", DEFAULT_MAX_BATCH_DELAY_MS)
        with serving(stock, workdir / "ts_stock") as (ts, cold_start):
            results["stock"] = {
                "cold_start_s": cold_start,
                "crowd": load(ts, payloads, CONCURRENCY, requests_total),
                "lone": load(ts, payloads, 1, requests_total // 3),
                "worker_rss_mb": worker_rss_mb(ts),
            }

        # 5. video end to end, default mode, against the original app's path
        print("[bench] video", flush=True)
        clip = write_video(workdir / "clip.mp4", args.video_seconds)
        with serving(archives[DEFAULT_PRECISION][0], workdir / "ts_video") as (ts, _):
            results["video"] = {"seconds": args.video_seconds, "ours": video_ours(ts, clip, workdir)}
        results["video"]["original"] = video_original(subject, clip, workdir)

        # 10. several video frames per request (default precision)
        print("[bench] packed frames", flush=True)
        results["packing"] = {
            "model": subject.arch,
            **packing(archives[DEFAULT_PRECISION][0], payloads, workdir, requests_total, args.video_seconds),
        }

        # 8. face-crop mode next to full mode (default precision)
        print("[bench] face-crop mode", flush=True)
        results["faces"] = face_mode(
            subject, archives[DEFAULT_PRECISION][0], workdir, args.video_seconds, 48 if quick else 160, quick
        )

        # 9. analysts: scan throughput and the cost of explanations, on the default mode's archive
        print("[bench] scan and explanations", flush=True)
        results["analysts"] = {
            "model": subject.arch,
            **analysts(archives[DEFAULT_PRECISION][0], payloads, workdir, requests_total, 48 if quick else SCAN_IMAGES),
        }

        # maxBatchDelay for the default mode
        results["batch_delay"] = []
        for delay in () if quick else (0, 5, 10, 20):
            archive = with_model_config(
                archives[DEFAULT_PRECISION][0], workdir / f"mar_delay{delay}" / f"{MODEL_NAME}.mar", maxBatchDelay=delay
            )
            with serving(archive, workdir / f"ts_delay{delay}") as (ts, _):
                results["batch_delay"].append(
                    {
                        "max_batch_delay_ms": delay,
                        "lone": load(ts, payloads, 1, requests_total // 3),
                        "crowd": load(ts, payloads, CONCURRENCY, requests_total),
                    }
                )
    return results


# --- 9. analysts: scan throughput, the cost of explanations ---------------------------------------------
SCAN_IMAGES = 500


def scan_folder(folder: Path, count: int) -> Path:
    """``count`` distinct 224x224 JPEGs (demo-style scenes, real and fake alternating) in ``folder``."""
    from scripts.make_demo_data import make_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i:04d}.jpg").write_bytes(encode_frame(make_image([9, i], fake=i % 2 == 1)))
    return folder


def explain_loop(ts: TorchServe, payloads: list[bytes], stop: threading.Event, latencies: list[float]) -> None:
    """One client asking the explanations API, one request after another, until ``stop``."""
    headers = {"Authorization": f"Bearer {ts.keys()['inference']}", "Content-Type": "image/jpeg"}
    url = f"{ts.inference_url}/explanations/{MODEL_NAME}"
    index = 0
    while not stop.is_set():
        started = time.perf_counter()
        requests.post(url, data=payloads[index % len(payloads)], headers=headers, timeout=300).raise_for_status()
        latencies.append(time.perf_counter() - started)
        index += 1


def analysts(archive: Path, payloads: list[bytes], workdir: Path, total: int, scan_images: int) -> dict[str, Any]:
    """Side by side on one served archive: the crowd of 16 clients, ``deepfake-detect scan`` over a folder
    of distinct images, and predictions before, beside and after explanations."""
    from deepfake_client import DeepfakeClient, scan

    folder = scan_folder(workdir / "scan_images", scan_images)
    with serving(archive, workdir / "ts_analysts") as (ts, _):
        crowd = load(ts, payloads, CONCURRENCY, total)
        lone = load(ts, payloads, 1, total // 3)
        rss_before = worker_rss_mb(ts)
        with DeepfakeClient(ts.client_config()) as client:
            scan(client, [folder], workdir / "warm.jsonl")  # warm-up: connections, caches
            started = time.perf_counter()
            tally = scan(client, [folder], workdir / "scan.jsonl")
            scan_s = time.perf_counter() - started
        explain_latencies: list[float] = []
        stop = threading.Event()
        explain_loop_thread = threading.Thread(target=explain_loop, args=(ts, payloads, stop, explain_latencies))
        explain_loop_thread.start()
        try:
            beside_crowd = load(ts, payloads, CONCURRENCY, total)
            beside_lone = load(ts, payloads, 1, total // 3)
        finally:
            stop.set()
            explain_loop_thread.join()
        beside_explanations = len(explain_latencies)
        lone_explanations: list[float] = []
        for payload in payloads[:20]:  # alone: an explanation's own latency
            started = time.perf_counter()
            requests.post(
                f"{ts.inference_url}/explanations/{MODEL_NAME}",
                data=payload,
                headers={"Authorization": f"Bearer {ts.keys()['inference']}", "Content-Type": "image/jpeg"},
                timeout=300,
            ).raise_for_status()
            lone_explanations.append(time.perf_counter() - started)
        after_crowd = load(ts, payloads, CONCURRENCY, total)
        after_lone = load(ts, payloads, 1, total // 3)
        rss_after = worker_rss_mb(ts)
    return {
        "crowd": crowd,
        "lone": lone,
        "scan": {
            "images": scan_images,
            "seconds": scan_s,
            "images_per_s": tally.scanned / scan_s if scan_s else 0.0,
            "answered": tally.scanned - len(tally.failures),
        },
        "explain": {
            "lone_p50_ms": percentile(lone_explanations, 50) * 1e3,
            "lone_p99_ms": percentile(lone_explanations, 99) * 1e3,
            "beside_crowd": beside_crowd,
            "beside_lone": beside_lone,
            "explanations_during": beside_explanations,
            "beside_p50_ms": percentile(explain_latencies, 50) * 1e3 if explain_latencies else None,
            "after_crowd": after_crowd,
            "after_lone": after_lone,
            "worker_rss_mb_before": rss_before,
            "worker_rss_mb_after": rss_after,
        },
    }


def section_alone(args: argparse.Namespace, name: str, measure: Any) -> dict[str, Any]:
    """One section measured alone (``--only NAME``) and merged into the report's JSON: on the trained
    ResNet50 when ``make benchmark`` cached it, else a randomly initialised one (speed does not depend on
    the weights); ``measure(archive, payloads, workdir)`` returns the section's results."""
    previous = args.report.with_suffix(".json")
    results = json.loads(previous.read_text()) if previous.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        subject = quick_subject(workdir) if args.quick else random_resnet50(workdir)
        path, _ = build_archive(
            subject.weights, subject.settings, MODEL_NAME, workdir / "mar", precision=DEFAULT_PRECISION
        )
        payloads = frame_payloads(16 if args.quick else 64, quick=args.quick or not DEMO_R18.exists())
        results[name] = {"model": subject.arch, **measure(path, payloads, workdir)}
    return results


def analysts_only(args: argparse.Namespace) -> dict[str, Any]:
    """Section 9 alone (``--only analysts``)."""
    total, images = (48, 48) if args.quick else (args.requests, SCAN_IMAGES)
    return section_alone(args, "analysts", lambda path, payloads, work: analysts(path, payloads, work, total, images))


# --- 10. packed frames: several video frames per request -----------------------------------------------
PACKINGS = (1, 4, 8)


def packing(archive: Path, payloads: list[bytes], workdir: Path, total: int, seconds: float) -> dict[str, Any]:
    """The 60 s clip with ``deepfake-detect video --frames-per-request`` 1, 4 and 8, and 16 clients
    sending OIP requests of as many frames, side by side on one served archive."""
    clip = write_video(workdir / "pack_clip.mp4", seconds)
    rows = {}
    with serving(archive, workdir / "ts_packing") as (ts, _):
        video_ours(ts, clip, workdir)  # warm-up
        for per_request in PACKINGS:
            rows[str(per_request)] = {
                "video": video_ours(ts, clip, workdir, per_request),
                "crowd": load(ts, payloads, CONCURRENCY, max(CONCURRENCY * 2, total // per_request), OIP, per_request),
            }
    return {"seconds": seconds, "rows": rows}


def packing_markdown(p: dict[str, Any]) -> str:
    rows = p["rows"]
    lines = [
        f"## 10. Packed frames: several video frames per request ({DEFAULT_PRECISION})",
        "",
        f"| frames per request | {p['seconds']:g} s 720p clip end to end | 16 concurrent clients, images/s | "
        "p50 ms per request |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {k} | {r['video']['end_to_end_s']:.2f} s | {r['crowd']['images_per_s']:.1f} | {r['crowd']['p50_ms']:.0f} |"
        for k, r in rows.items()
    ]
    return "\n".join(lines)


def packing_only(args: argparse.Namespace) -> dict[str, Any]:
    """Section 10 alone (``--only packing``)."""
    total, seconds = (48, 4.0) if args.quick else (args.requests, args.video_seconds)
    return section_alone(args, "packing", lambda path, payloads, work: packing(path, payloads, work, total, seconds))


def random_resnet50(workdir: Path) -> Subject:
    """The cached trained ResNet50 when make benchmark made one, else a randomly initialised one (speed does
    not depend on the weights)."""
    cached = BENCH / "resnet50" / "best_ResNet50.pth"
    if cached.exists():
        return Subject("resnet50", cached, demo_settings(cached))
    torch.manual_seed(0)
    weights = workdir / "r50.pth"
    torch.save(build_model("resnet50").state_dict(), weights)
    return Subject("resnet50 (random weights)", weights, ModelSettings(mean=HALF_MEAN, std=HALF_STD))


# --- report -------------------------------------------------------------------------------------------
def checks(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    served, ceiling, stock = results["served"], results["ceiling"], results["stock"]
    cpus = results["machine"]["cpus"]  # the run's machine, not the one rendering the report
    default = served[DEFAULT_PRECISION]
    rows = []
    for mode in PRECISIONS:
        rate, target = served[mode]["crowd"]["images_per_s"], TARGETS["served_images_per_s"][mode]
        inproc = ceiling[f"openvino {mode}"]["images_per_s"]
        rows.append((f"{mode} served >= {target:g} images/s", rate >= target, f"{rate:.1f} images/s"))
        cores = served[mode]["crowd"]["cores"]
        rows.append(
            (
                f"{mode} served >= {TARGETS['served_vs_in_process']:.0%} of in-process",
                rate >= TARGETS["served_vs_in_process"] * inproc,
                f"{rate:.1f} / {inproc:.1f} = {rate / inproc:.0%} (the worker had {cores['worker']:.2f} of "
                f"{cpus} cores, Java {cores['frontend']:.2f}, clients {cores['clients']:.2f}: in-process x "
                f"worker's share = {inproc * cores['worker'] / (cpus or 1):.0f})",
            )
        )
    stock_rate = stock["crowd"]["images_per_s"]
    for name, mode, target in (
        (f"default ({DEFAULT_PRECISION})", DEFAULT_PRECISION, TARGETS["default_vs_stock"]),
        ("fp32", "fp32", TARGETS["fp32_vs_stock"]),
    ):
        ratio = served[mode]["crowd"]["images_per_s"] / stock_rate
        rows.append((f"{name} >= {target:g}x the stock handler", ratio >= target, f"{ratio:.2f}x"))
    lone, stock_lone = default["lone"]["p50_ms"], stock["lone"]["p50_ms"]
    rows.append(
        ("lone request p50, default mode < stock's", lone < stock_lone, f"{lone:.0f} ms vs {stock_lone:.0f} ms")
    )
    ours, original = results["video"]["ours"], results["video"]["original"]
    rows.append(
        (
            f"{results['video']['seconds']:g} s 720p clip end to end <= {TARGETS['video_seconds']:g} s",
            ours["end_to_end_s"] <= TARGETS["video_seconds"],
            f"{ours['end_to_end_s']:.2f} s",
        )
    )
    speedup = original["end_to_end_s"] / ours["end_to_end_s"]
    # decoding and inference share the 2 cores: their times alone, added, bound what overlap can reach
    floor = ours["decode_s"] + ours["frames"] / ceiling[f"openvino {DEFAULT_PRECISION}"]["images_per_s"]
    rows.append(
        (
            f"video >= {TARGETS['video_vs_original']:g}x the original path",
            speedup >= TARGETS["video_vs_original"],
            f"{speedup:.1f}x ({original['end_to_end_s']:.2f} s vs {ours['end_to_end_s']:.2f} s; decode alone + "
            f"inference alone = {floor:.2f} s on these {cpus} cores bounds it at "
            f"{original['end_to_end_s'] / floor:.1f}x)",
        )
    )
    faces = results["faces"]
    detection = faces["detection"]
    rows.append(
        (
            f"face recall {TARGETS['face_recall']:.0%} on the test faces, 0 false faces",
            detection["recall"] >= TARGETS["face_recall"] and detection["false_faces"] == 0,
            f"{detection['found']}/{detection['faces']} faces found, {detection['false_faces']} false "
            f"(incl. {detection['no_face_images']} images without a face)",
        )
    )
    video = {mode: faces["video"][mode]["end_to_end_s"] for mode in FACE_MODES}
    rows.append(
        (
            f"face-mode clip <= {TARGETS['face_video_vs_full']:g}x full mode",
            video["face"] <= TARGETS["face_video_vs_full"] * video["full"],
            f"{video['face']:.2f} s vs {video['full']:.2f} s = {video['face'] / video['full']:.2f}x "
            f"({DEFAULT_FACE_WORKERS} workers, the default; one worker of all the cores: "
            f"{video['face_1_worker'] / video['full']:.2f}x)",
        )
    )
    cold = default["cold_start_s"]
    rows.append(
        (
            f"default mode READY <= {TARGETS['cold_start_s']:g} s after start",
            cold <= TARGETS["cold_start_s"],
            f"{cold:.1f} s",
        )
    )
    for label, modes in results["agreement"].items():
        measured = modes[DEFAULT_PRECISION]
        rows.append(
            (
                f"default mode agrees with fp32 ({label})",
                bool(measured["passes"]),
                f"labels {measured['label_agreement']:.2%}, mean |dp| {measured['mean_abs_fake_probability_diff']:.4f}",
            )
        )
    if "analysts" in results:
        a = results["analysts"]
        ratio = a["scan"]["images_per_s"] / a["crowd"]["images_per_s"]
        rows.append(
            (
                f"scan >= {TARGETS['scan_vs_crowd']:.0%} of the crowd's images/s",
                ratio >= TARGETS["scan_vs_crowd"],
                f"{a['scan']['images_per_s']:.1f} images/s, {ratio:.2f}x",
            )
        )
    return rows


def _row(name: str, r: dict[str, Any], rss: float | None = None, ratio: float | None = None) -> str:
    cells = [name, f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}"]
    cells.append(f"{rss:.0f}" if rss is not None else "")
    cells.append(f"{ratio:.2f}x" if ratio is not None else "")
    return "| " + " | ".join(cells) + " |"


def analysts_markdown(a: dict[str, Any]) -> str:
    e, crowd = a["explain"], a["crowd"]["images_per_s"]
    scan_ratio = a["scan"]["images_per_s"] / crowd if crowd else 0.0
    header = "| predictions | 16 concurrent images/s | p50 ms | p99 ms | lone p50 ms |\n| --- | --- | --- | --- | --- |"

    def row(name: str, c: dict[str, Any], lone: dict[str, Any]) -> str:
        return (
            f"| {name} | {c['images_per_s']:.1f} ({c['images_per_s'] / crowd:.2f}x) | {c['p50_ms']:.0f} | "
            f"{c['p99_ms']:.0f} | {lone['p50_ms']:.0f} |"
        )

    return "\n".join(
        [
            f"## 9. Analysts: `scan` throughput and the cost of explanations ({a['model']}, {DEFAULT_PRECISION})",
            "",
            f"`deepfake-detect scan` over a folder of {a['scan']['images']} distinct 224x224 JPEGs: "
            f"**{a['scan']['images_per_s']:.1f} images/s**, {scan_ratio:.2f}x the {crowd:.1f} images/s of 16 "
            f"concurrent clients on the same archive (target >= {TARGETS['scan_vs_crowd']:.2f}x); "
            f"{a['scan']['answered']}/{a['scan']['images']} answered.",
            "",
            f"An explanation (Grad-CAM, fp32 weights, one forward and one backward pass) alone: p50 "
            f"{e['lone_p50_ms']:.0f} ms, p99 {e['lone_p99_ms']:.0f} ms, against a lone prediction's "
            f"{a['lone']['p50_ms']:.0f} ms. Predictions are never explained unless asked: before any explanation, "
            "beside one client explaining without pause, and after (the fp32 model then resident):",
            "",
            header,
            row("before any explanation", a["crowd"], a["lone"]),
            row(
                f"beside a client explaining ({e['explanations_during']} explanations, p50 "
                f"{(e['beside_p50_ms'] or 0):.0f} ms)",
                e["beside_crowd"],
                e["beside_lone"],
            ),
            row("after explanations", e["after_crowd"], e["after_lone"]),
            "",
            f"Worker memory: {e['worker_rss_mb_before']:.0f} MB before the first explanation, "
            f"{e['worker_rss_mb_after']:.0f} MB after (the fp32 model the explanations differentiate is loaded on "
            "the first one). Explanations share the worker's cores with predictions while they run (at most "
            "MAX_EXPLANATIONS_PER_BATCH = 2 per batch); they leave the prediction path itself unchanged.",
        ]
    )


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    stock_rate = results["stock"]["crowd"]["images_per_s"]
    header = "| path | images/s | p50 ms | p99 ms | RSS MB | vs stock |\n| --- | --- | --- | --- | --- | --- |"
    lines = [
        "# Benchmark",
        "",
        f"Measured by `make benchmark` (`python -m scripts.benchmark`) in one run on {m['cpus']} CPU cores "
        f"({m['processor']}), Python {m['python']}, torch {m['torch']}, TorchServe {m.get('torchserve', '0.12.0')}; "
        f"{results['model']}, "
        f"224x224 JPEG frames, batchSize {DEFAULT_BATCH_SIZE}, maxBatchDelay {DEFAULT_MAX_BATCH_DELAY_MS} ms, "
        f"{results.get('workers', 1)} worker{'s' * (results.get('workers', 1) > 1)}. "
        "Ratios are stable run to run; absolute numbers vary by ~10%."
        + (" **Quick smoke run: numbers are meaningless.**" if results["quick"] else ""),
        "",
        "## Targets",
        "",
        "| check | result | measured |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |" for name, ok, detail in checks(results)]
    lines += [
        "",
        "## 1. In-process ceiling (batches of 8, a fresh process each; p50/p99 per batch)",
        "",
        header,
    ]
    lines += [_row(name, r, r["rss_mb"], r["images_per_s"] / stock_rate) for name, r in results["ceiling"].items()]
    lines += [
        "",
        f"## 2-4. Served ({CONCURRENCY} concurrent clients, distinct frames), the stock handler, the original app",
        "",
        "p50/p99 per request; RSS of the worker process(es).",
        "",
        header,
    ]
    for mode, r in results["served"].items():
        lines.append(_row(f"ours, {mode}", r["crowd"], r["worker_rss_mb"], r["crowd"]["images_per_s"] / stock_rate))
        if "crowd_oip" in r:
            oip = r["crowd_oip"]
            lines.append(_row(f"ours, {mode}, Open Inference Protocol", oip, None, oip["images_per_s"] / stock_rate))
    stock = results["stock"]
    lines.append(_row("stock ImageClassifier (fp32 eager)", stock["crowd"], stock["worker_rss_mb"], 1.0))
    for mode, r in results["served"].items():
        lines.append(_row(f"ours, {mode}, lone request", r["lone"], None, None))
    lines.append(_row("stock ImageClassifier, lone request", stock["lone"], None, None))
    original = results["original_app"]
    lines.append(
        _row(
            "original app's path (in-process, one at a time, fp32)",
            original,
            original["rss_mb"],
            original["images_per_s"] / stock_rate,
        )
    )
    lines += [
        "",
        "Per batch in the worker (its log), under load:",
        "",
        "| mode | mean batch | decode + resize ms | inference ms |",
        "| --- | --- | --- | --- |",
    ]
    for mode, r in results["served"].items():
        c = r["crowd"]
        if "mean_batch" in c:
            lines.append(
                f"| {mode} | {c['mean_batch']:.1f} | {c['decode_ms_per_batch']:.1f} | "
                f"{c['inference_ms_per_batch']:.1f} |"
            )
    lines += [
        "",
        "CPU cores used during the crowd load (2 in all): the worker cannot have the whole machine that the "
        "in-process ceiling has, because TorchServe's Java frontend and the clients share it.",
        "",
        "| path | worker | Java frontend | clients (this process) |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in [*((f"ours, {m}", r) for m, r in results["served"].items()), ("stock", results["stock"])]:
        cores = r["crowd"]["cores"]
        lines.append(f"| {name} | {cores['worker']:.2f} | {cores['frontend']:.2f} | {cores['clients']:.2f} |")
    v = results["video"]
    ours, orig = v["ours"], v["original"]
    lines += [
        "",
        f"## 5. Video: a {v['seconds']:g} s 720p30 H.264 clip at 2 fps ({ours['frames']} frames), default mode",
        "",
        "| path | end to end s | decode s | inference s |",
        "| --- | --- | --- | --- |",
        f"| `deepfake-detect video` (decode overlapped with batched inference) | {ours['end_to_end_s']:.2f} | "
        f"{ours['decode_s']:.2f} | {ours['inference_s']:.2f} |",
        f"| original app's path (frames to JPEG files, then one at a time, fp32) | {orig['end_to_end_s']:.2f} | "
        f"{orig['decode_s']:.2f} | {orig['inference_s']:.2f} |",
        "",
        "Decode: sampling and encoding the frames alone (ours), or extracting them to files (original). "
        "Inference: the worker's own time in its log (ours), or the one-by-one loop (original).",
        "",
        "## 6. Cold start: TorchServe start to worker READY",
        "",
        "| mode | seconds |",
        "| --- | --- |",
    ]
    lines += [f"| {mode} | {r['cold_start_s']:.1f} |" for mode, r in results["served"].items()]
    lines.append(f"| stock ImageClassifier | {results['stock']['cold_start_s']:.1f} |")
    lines += [
        "",
        "## 7. Agreement with fp32 on held-out images",
        "",
        "| model | mode | images | labels agree | mean abs fake-probability diff | max | within the bar |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, modes in results["agreement"].items():
        for mode, a in modes.items():
            lines.append(
                f"| {label} | {mode} | {a['images']} | {a['label_agreement']:.2%} | "
                f"{a['mean_abs_fake_probability_diff']:.4f} | {a['max_abs_fake_probability_diff']:.4f} | "
                f"{'yes' if a['passes'] else 'no'} |"
            )
    j = results["jpeg_draft"]
    lines += [
        "",
        f"## Large uploads: JPEG draft decode ({j['images']} {j['width']}x{j['height']} JPEGs, opt-in `JPEG_DRAFT=1`)",
        "",
        "| decode | decode + resize ms per image |",
        "| --- | --- |",
        f"| exact (default) | {j['exact_decode_ms']:.1f} |",
        f"| draft (libjpeg DCT scaling) | {j['draft_decode_ms']:.1f} |",
        "",
        f"Deviation of the draft decode (fp32): labels agree {j['label_agreement']:.2%}, mean |fake probability "
        f"diff| {j['mean_abs_fake_probability_diff']:.4f}, max {j['max_abs_fake_probability_diff']:.4f}.",
    ]
    f = results["faces"]
    d, images, video = f["detection"], f["images_720p"], f["video"]
    lines += [
        "",
        f"## 8. Face-crop mode (`CROP=face`), next to full mode: {DEFAULT_PRECISION}, the same weights",
        "",
        f"Detection (MTCNN, facenet-pytorch) on {d['faces'] + d['no_face_images']} 1280x720 frames, real faces "
        f"from scikit-image pasted at known places and scales (~45-110 px), {d['no_face_images']} of them with no "
        f"face: {d['found']}/{d['faces']} found, {d['false_faces']} false, {d['ms_per_720p_frame']:.0f} ms per "
        "frame in-process.",
        "",
        "| 1280x720 JPEGs with a face | images/s | p50 ms | p99 ms | mean batch (crops) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {FACE_MODES[mode]}, {CONCURRENCY} concurrent clients | {r['images_per_s']:.1f} | {r['p50_ms']:.0f} | "
        f"{r['p99_ms']:.0f} | {r.get('mean_batch', float('nan')):.1f} |"
        for mode, r in images.items()
    ]
    lines += [
        "",
        f"A {results['video']['seconds']:g} s 720p clip with a face moving across it, at 2 fps with `deepfake-detect`: "
        f"full mode {video['full']['end_to_end_s']:.2f} s (frames sent at 224 px); face mode "
        f"{video['face']['end_to_end_s']:.2f} s with {DEFAULT_FACE_WORKERS} workers of one thread each (the default), "
        f"{video['face_1_worker']['end_to_end_s']:.2f} s with one worker of all the cores (frames sent whole, the "
        "server finds the faces). MTCNN works one image at a time through many small steps, which use one core "
        "well and two poorly: workers side by side beat threads within one. Detection in the client instead "
        f"would cost {video['client_detection_s']:.2f} s for the same frames in one process on the same cores, "
        "before any request: detection is the work either way, and in the server it overlaps with decoding in "
        "the client, runs once for every kind of client (curl, CLI, web page, OIP) and keeps the crop the "
        "archive was trained with in one place.",
    ]
    if results["batch_delay"]:
        lines += [
            "",
            f"## maxBatchDelay, default mode ({DEFAULT_PRECISION})",
            "",
            f"| maxBatchDelay ms | lone p50 ms | lone p99 ms | {CONCURRENCY} concurrent images/s | mean batch |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {d['max_batch_delay_ms']} | {d['lone']['p50_ms']:.0f} | {d['lone']['p99_ms']:.0f} | "
            f"{d['crowd']['images_per_s']:.1f} | {d['crowd'].get('mean_batch', float('nan')):.1f} |"
            for d in results["batch_delay"]
        ]
    if "analysts" in results:
        lines += ["", analysts_markdown(results["analysts"])]
    if "packing" in results:
        lines += ["", packing_markdown(results["packing"])]
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per load level")
    parser.add_argument("--video-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: random ResNet18, small counts")
    parser.add_argument("--report", type=Path, default=Path("docs/benchmark.md"))
    parser.add_argument(
        "--render", type=Path, default=None, help="only write the report again from this run's JSON (no measuring)"
    )
    parser.add_argument(
        "--only",
        choices=["analysts", "packing"],
        help="measure one section alone and merge it into the report's JSON (analysts: scan, explanations; "
        "packing: frames per request)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.quick and args.video_seconds == get_args_parser().get_default("video_seconds"):
        args.video_seconds = 4.0
    if args.render:
        results = json.loads(args.render.read_text())
    elif args.only == "analysts":
        results = analysts_only(args)
    elif args.only == "packing":
        results = packing_only(args)
    else:
        results = run(args)
    if "served" in results:
        report = markdown(results)
    else:  # a section measured alone, into a report without the full run
        parts = [analysts_markdown(results["analysts"])] if "analysts" in results else []
        parts += [packing_markdown(results["packing"])] if "packing" in results else []
        report = "\n\n".join(parts) + "\n"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    args.report.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(report)
    if "served" not in results:
        return 0
    return 0 if args.quick or all(ok for _, ok, _ in checks(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
