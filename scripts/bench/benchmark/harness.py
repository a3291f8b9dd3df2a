"""What every section uses: inputs (frames, clips), the models measured, a TorchServe started from an
archive, a crowd of clients, and what the worker's log and process say about a run.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml
from PIL import Image

from deepfake_client import DeepfakeClient, encode_frame
from deepfake_contract import DEFAULT_MODEL, NATIVE, OIP, oip_request
from handler.checkpoint import build_model
from handler.settings import HALF_MEAN, HALF_STD, ModelSettings
from scripts import REPO_ROOT, options
from scripts.bench.benchmark.crowd import clients
from scripts.operations.torchserve import DEFAULT_CONFIG, Ports, TorchServe, observed_batches
from scripts.synthetic.clips import write_h264
from scripts.synthetic.faces import photo

DEMO = REPO_ROOT / "artifacts" / "demo"


BENCH = REPO_ROOT / "artifacts" / "bench"


DEMO_R18 = DEMO / "model" / "best_ResNet18.pth"


MODEL_NAME = DEFAULT_MODEL


CONCURRENCY = 16  # two batches of 8 in flight: the next one fills while one runs


TARGETS = {
    "served_images_per_s": {"int8": 90.0, "bf16": 45.0, "fp32": 24.0},
    # int8's bar is the runtimes issue's: its worker shares 2 cores with Java and the clients (section 2-4)
    "served_vs_in_process": {"int8": 0.70, "bf16": 0.90, "fp32": 0.90},
    "default_vs_stock": 4.0,
    "fp32_vs_stock": 1.5,
    "video_seconds": 2.6,
    "video_vs_original": 4.0,
    "cold_start_s": 15.0,
    "face_recall": 1.0,
    "face_video_vs_full": 1.6,
    "face_images_vs_full": 0.60,
    "face_box_gap_px": 2.0,  # the detector against facenet-pytorch's own path, on the benchmark's frames
    "face_score_gap": 0.01,
    "scan_vs_crowd": 0.90,
}


ADOPT_GAIN = 1.05  # what an alternative (a hint, a worker layout) must gain over the default to be adopted
# Requests a served mode (and the stock handler) gets before its crowd is measured: a running service, as the
# in-process ceilings are measured after warm-up too. Section 15: the frontend's CPU per request settles after its
# first ~800 requests (C1 compiling the request path); the first seconds after a start are sections 6 and 15.
RUNNING_SERVICE_WARM_UP = 800


def running_service_warm_up(quick: bool) -> int:
    """Requests a server answers before it is measured as a running service (sections 2-4 and 8); a smoke
    run's few."""
    return 48 if quick else RUNNING_SERVICE_WARM_UP


BATCH_LINE = re.compile(r"Batch of (\d+): decode ([\d.]+) ms, inference ([\d.]+) ms")
# what batch_times reads from the worker's log for a load: means per batch, and the inference's total
BATCH_TIMES = ("mean_batch", "decode_ms_per_batch", "inference_ms_per_batch", "inference_ms_total")


# the instruction sets this CPU's int8 and bf16 speed turn on (VNNI: int8 dot products; AVX-512 BF16 or AMX: bf16)
SPEED_INSTRUCTION_SETS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU a run measured on: its model name and which of SPEED_INSTRUCTION_SETS it has (the first core's
    entry in Linux's /proc/cpuinfo; elsewhere the platform's processor name alone). Without VNNI int8 runs on slower
    instructions, and without BF16 a bf16 archive runs as fp32 (handler.runtimes.plan_precision)."""
    name, flags = platform.processor() or platform.machine(), None
    with contextlib.suppress(OSError):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in cpuinfo.read_text().split("\n\n")[0].splitlines())
            if key.strip() in ("model name", "flags")
        )
        name = fields.get("model name") or name
        flags = set(fields["flags"].split()) if "flags" in fields else None
    return {
        "model": name,
        "instruction_sets": None if flags is None else [s for s in SPEED_INSTRUCTION_SETS if s in flags],
    }


def write_video(
    path: Path, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 30, face: bool = False
) -> Path:
    """A panning textured scene, H.264: decoding costs what a real clip of that size costs. ``face``: a
    real face (scikit-image's astronaut, 384 px) moves across it, for face-crop mode."""
    rng = np.random.default_rng(0)
    base = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    person = np.asarray(photo("astronaut").resize((384, 384))) if face else None

    def panned() -> Iterator[np.ndarray]:
        for i in range(round(seconds * fps)):
            pixels = np.roll(base, i * 4, axis=1)
            if person is not None:
                x = (i * 3) % (size[0] - person.shape[1])
                pixels = pixels.copy()
                pixels[100 : 100 + person.shape[0], x : x + person.shape[1]] = person
            yield pixels

    return write_h264(path, panned(), fps, {"preset": "veryfast"})


def test_images(count: int) -> list[Path]:
    """Held-out demo images (never trained or calibrated on), real and fake alternating."""
    real = sorted((DEMO / "data" / "images" / "test" / "real").glob("*.jpg"))
    fake = sorted((DEMO / "data" / "images" / "test" / "fake").glob("*.jpg"))
    return [p for pair in zip(real, fake, strict=False) for p in pair][:count]


def frame_payloads(count: int, quick: bool) -> list[bytes]:
    """Distinct 224x224 JPEG frames, as the client sends them."""
    if quick:
        from scripts.synthetic.scenes import make_image

        return [encode_frame(make_image([5, i], fake=i % 2 == 1)) for i in range(count)]
    return [encode_frame(Image.open(p)) for p in test_images(count)]


def timed(call: Callable[[], Any], iterations: int, warm_up: int = 5) -> list[float]:
    """Seconds per call of ``iterations`` calls, after ``warm_up`` unmeasured ones."""
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Subject:
    """The checkpoint under test and how to read it."""

    arch: str
    weights: Path
    settings: ModelSettings


def demo_settings(weights: Path) -> ModelSettings:
    from scripts.operations.archives import settings_from_files, sidecar_files

    return ModelSettings.from_mapping(settings_from_files(sidecar_files(weights)))


def ensure_demo() -> None:
    from scripts.demo import build_demo

    if build_demo.run(options(build_demo.get_args_parser(), out=DEMO)) != 0:
        raise SystemExit("benchmark: building the demo failed")


R50_EPOCHS = 8  # the demo's recipe, trained to convergence: 4 epochs left it at 95% validation accuracy


def ensure_resnet50() -> Path:
    """A ResNet50 trained on the demo data with the demo's recipe, for longer (cached)."""
    from scripts.demo import build_demo
    from scripts.modeling import train

    out = BENCH / "resnet50"
    weights = out / f"{train.CHECKPOINT_NAMES['resnet50']}.pth"
    if not weights.exists():
        print("[bench] training a ResNet50 on the demo data (cached in artifacts/bench)", flush=True)
        if train.run(build_demo.train_options(DEMO / "data", out, "resnet50", R50_EPOCHS)) != 0:
            raise SystemExit("benchmark: training the ResNet50 failed")
    return weights


def quick_subject(workdir: Path) -> Subject:
    torch.manual_seed(0)
    weights = workdir / "r18.pth"
    torch.save(build_model("resnet18").state_dict(), weights)
    return Subject("resnet18", weights, ModelSettings(mean=HALF_MEAN, std=HALF_STD))


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


@contextlib.contextmanager
def serving(archive: Path, workdir: Path, config_file: Path = DEFAULT_CONFIG) -> Iterator[tuple[TorchServe, float]]:
    """TorchServe serving ``archive`` alone (with the project's config.properties, or ``config_file``);
    yields it and the seconds from start to worker READY."""
    store = workdir / "store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    shutil.copy2(archive, store / f"{MODEL_NAME}.mar")
    ts = TorchServe(workdir / "runtime", store, config_file=config_file, ports=Ports.free())
    started = time.perf_counter()
    ts.start(timeout=300)
    try:
        yield ts, time.perf_counter() - started
    finally:
        ts.stop()


class Servers:
    """The run's servers of the default mode's archive as built, kept between sections: the first section that asks
    starts one (``running``), the next ones find it a running service (a start and its warm-up cost ~10 s here),
    and the run stops it at its end. A section that compares servers with each other (8, 12, 15) starts its own
    (``serving``), so that each side of its comparison has the same history."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._running: dict[Path, tuple[TorchServe, float]] = {}

    def running(self, archive: Path, workdir: Path) -> tuple[TorchServe, float]:
        """The server of ``archive`` and the seconds its start took (started now, from ``workdir``, if none is)."""
        key = archive.resolve()
        if key not in self._running:
            self._running[key] = self._stack.enter_context(serving(archive, workdir))
        return self._running[key]

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


def server_processes(ts: TorchServe) -> dict[str, list[psutil.Process]]:
    """TorchServe's processes by part: its Java ``frontend`` and its model ``worker`` processes."""
    root = psutil.Process(ts.pid())
    parts: dict[str, list[psutil.Process]] = {"worker": [], "frontend": []}
    for process in [root, *root.children(recursive=True)]:
        parts["frontend" if "java" in process.name() else "worker"].append(process)
    return parts


def rss_mb(ts: TorchServe, part: str) -> float:
    """Resident memory of one part of ``server_processes``: the model ``worker`` processes or the ``frontend``."""
    return sum(p.memory_info().rss for p in server_processes(ts)[part]) / 2**20


def served_runtime(ts: TorchServe) -> dict[str, Any]:
    """What the served model's worker runs (its ``describe``): engine, the precision that runs and the one
    asked for, why they differ, the device. A bf16 archive runs as fp32 on a CPU without BF16."""
    with DeepfakeClient(ts.client_config()) as client:
        return (client.describe(MODEL_NAME).get("customizedMetadata") or {}).get("runtime", {})


def worker_rss_mb(ts: TorchServe) -> float:
    return rss_mb(ts, "worker")


def batch_times(ts: TorchServe, offset: int) -> dict[str, float]:
    """Mean decode and inference milliseconds per batch, from the worker's log since ``offset``."""
    log = ts.log_dir / "model_log.log"
    text = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""
    rows = [(int(n), float(d), float(i)) for n, d, i in BATCH_LINE.findall(text) if int(n) > 0]
    if not rows:
        return {}
    sizes, decode, inference = ([r[k] for r in rows] for k in range(3))
    figures = (statistics.mean(sizes), statistics.mean(decode), statistics.mean(inference), sum(inference))
    return dict(zip(BATCH_TIMES, figures, strict=True))


def log_size(ts: TorchServe) -> int:
    log = ts.log_dir / "model_log.log"
    return log.stat().st_size if log.exists() else 0


def load(
    ts: TorchServe,
    payloads: list[bytes],
    concurrency: int,
    total: int,
    protocol: str = NATIVE,
    per_request: int = 1,
    sender: Callable[[bytes], None] | None = None,
    warm_up: bool = True,
    processes: int = 1,
) -> dict[str, Any]:
    """``total`` requests from ``concurrency`` clients, cycling over distinct payloads, in ``protocol``'s
    wire format (native image bytes, or ``per_request`` images per Open Inference Protocol request);
    ``images_per_s`` counts images. ``sender``: sends one body another way than HTTP (section 13's gRPC);
    its requests carry no request id, so no batch sizes are observed for them. ``warm_up``: first send
    ``2 x concurrency`` requests unmeasured (not needed again for a later round on the same server).
    ``processes``: the clients split over that many Python processes, where one process's GIL would
    bound the rate (a GPU's); on 2 cores they would only take the server's CPU, so the CPU sections keep one.
    """
    if protocol == OIP:
        url = f"{ts.inference_url}/v2/models/{MODEL_NAME}/infer"
        packs = [[payloads[(i + j) % len(payloads)] for j in range(per_request)] for i in range(len(payloads))]
        bodies = [json.dumps(oip_request(pack)).encode() for pack in packs]
        content_type = "application/json"
    else:
        url, bodies, content_type = f"{ts.inference_url}/predictions/{MODEL_NAME}", payloads, "image/jpeg"
    headers = {"Authorization": f"Bearer {ts.keys()['inference']}", "Content-Type": content_type}
    shares = processes if sender is None else 1
    with clients(url, bodies, headers, concurrency, total, warm_up, shares, sender) as crowd:
        offset = log_size(ts)
        cpu_before = cpu_seconds(ts)
        started = time.perf_counter()
        latencies, ids, clients_cpu = crowd()
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(ts)
    ts_log = (ts.log_dir / "ts_log.log").read_text(errors="replace")
    sizes = [len(b & ids) for b in observed_batches(ts_log, MODEL_NAME) if b & ids]
    cores = {k: (cpu_after[k] - cpu_before[k]) / elapsed for k in cpu_after}
    return {
        "concurrency": concurrency,
        "requests": total,
        "answered": len(ids) if sender is None else len(latencies),  # HTTP: distinct request ids answered
        "images_per_s": total * per_request / elapsed,
        "per_request": per_request,
        "processes": shares,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_batch": max(sizes, default=0),
        "cores": {**cores, "clients": clients_cpu / elapsed},
        **batch_times(ts, offset),
    }


def merged_rounds(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of ``load`` on one server as one measurement (rounds measured in turn with another's, so that
    this VM's drift weighs on both alike): images over time, the median round's latency, the worst p99, and
    each round's images/s (``rounds``)."""
    seconds = sum(r["requests"] * r["per_request"] / r["images_per_s"] for r in measured)
    images = sum(r["requests"] * r["per_request"] for r in measured)
    # the worker's log, over the rounds whose batches it had written when the round ended: its lines reach the
    # file after the answers, so a short round can end before any (they then count in the next round's)
    logged = [r for r in measured if all(key in r for key in BATCH_TIMES)]
    first = {key: value for key, value in measured[0].items() if key not in BATCH_TIMES}
    return {
        **first,
        "requests": sum(r["requests"] for r in measured),
        "images_per_s": images / seconds,
        "p50_ms": statistics.median(r["p50_ms"] for r in measured),
        "p99_ms": max(r["p99_ms"] for r in measured),
        "max_batch": max(r["max_batch"] for r in measured),
        **(
            {
                **{key: statistics.mean(r[key] for r in logged) for key in BATCH_TIMES if key != "inference_ms_total"},
                "inference_ms_total": sum(r["inference_ms_total"] for r in logged),
            }
            if logged
            else {}
        ),
        "rounds": [r["images_per_s"] for r in measured],
        **({"idle_cores": max(r["idle_cores"] for r in measured)} if all("idle_cores" in r for r in measured) else {}),
    }


def merged_ceilings(measured: list[dict[str, float]]) -> dict[str, Any]:
    """Rounds of the in-process ceiling (``inprocess._ceiling``, the same batches each) as one: images over
    time, and each round's images/s (``rounds``)."""
    return {
        "images_per_s": len(measured) / sum(1 / r["images_per_s"] for r in measured),
        "rounds": [r["images_per_s"] for r in measured],
    }


def cpu_seconds(ts: TorchServe) -> dict[str, float]:
    """CPU seconds used so far by the model worker(s) and TorchServe's Java frontend (the clients: crowd.clients)."""
    return {
        part: sum(times.user + times.system for times in (p.cpu_times() for p in processes))
        for part, processes in server_processes(ts).items()
    }


def in_fresh_process(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a new interpreter (JSON in and out), so that its memory is its own.

    A plain subprocess: a ``multiprocessing`` spawn child ran OpenVINO at half speed here.
    """
    code = (
        f"import json, sys; from {function.__module__} import {function.__name__}; "
        f"print(json.dumps({function.__name__}(*json.loads(sys.stdin.read()))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(args), capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


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
