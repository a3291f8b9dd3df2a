"""Benchmark the deployment on this machine and write a report with pass/fail targets.

    python -m scripts.benchmark --report docs/benchmark.md          # make benchmark

Everything runs against real TorchServe instances on free loopback ports, each started from an
archive built here (a ResNet18; the weights do not change the speed). Measured:

* single-request latency, and throughput at several client concurrencies, with the batch sizes
  TorchServe actually ran (read from its own log);
* maxBatchDelay 0 / 20 / 50 ms: what waiting for a batch costs a lone request and buys a crowd;
* 1 worker against 2 workers on this machine's cores;
* a 720p video end to end (2 fps sampling, decode overlapped with inference) against the original
  app's way: frames classified one at a time;
* the client's peak memory on a short and a four times longer video (it must not grow with length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import requests
import torch
from PIL import Image

from deepfake_client import ClientConfig, DeepfakeClient, encode_frame
from handler.checkpoint import build_model
from handler.settings import ModelSettings
from scripts.archive import build_archive
from scripts.serve import Ports, TorchServe, observed_batches

TARGETS = {
    "video_speedup": 1.5,  # end-to-end video analysis vs one frame at a time
    "client_memory_growth_mb": 50.0,  # peak RSS, 4x longer video minus short video
    "batched_throughput_gain": 1.2,  # 16 concurrent vs 1 at a time, images/s
}


def write_video(path: Path, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 25) -> Path:
    rng = np.random.default_rng(0)
    base = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 4, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Bench:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.weights = workdir / "r18.pth"
        torch.manual_seed(0)
        torch.save(build_model("resnet18").state_dict(), self.weights)
        self.payload = encode_frame(Image.new("RGB", (640, 360), (90, 120, 60)))

    def server(self, name: str, max_batch_delay: int = 20) -> TorchServe:
        store = self.workdir / f"store_{name}"
        build_archive(self.weights, ModelSettings(), "deepfake", store, max_batch_delay=max_batch_delay)
        ts = TorchServe(self.workdir / f"rt_{name}", store, ports=Ports.free())
        ts.start(timeout=300)
        return ts

    def load(self, ts: TorchServe, concurrency: int, requests_total: int) -> dict:
        url = f"{ts.inference_url}/predictions/deepfake"
        headers = {"Authorization": f"Bearer {ts.keys()['inference']}", "Content-Type": "image/jpeg"}
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency + 2))
        latencies: list[float] = []
        ids: set[str] = set()

        def one(_: int) -> None:
            started = time.perf_counter()
            response = session.post(url, data=self.payload, headers=headers, timeout=300)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            ids.add(response.headers["x-request-id"])

        for _ in range(concurrency):  # warm-up
            one(0)
        latencies.clear()
        ids.clear()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests_total)))
        elapsed = time.perf_counter() - started
        log = (ts.log_dir / "ts_log.log").read_text(errors="replace")
        sizes = [len(b & ids) for b in observed_batches(log, "deepfake") if b & ids]
        return {
            "concurrency": concurrency,
            "requests": requests_total,
            "images_per_s": requests_total / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000,
            "mean_batch": statistics.mean(sizes) if sizes else float("nan"),
            "max_batch": max(sizes, default=0),
        }

    def video(self, ts: TorchServe, path: Path) -> dict:
        config = ClientConfig(base_url=ts.inference_url, management_url=ts.management_url, key_file=ts.key_file)
        with DeepfakeClient(config) as client:
            started = time.perf_counter()
            analysis = client.analyze_video(path, 2.0)
            pipelined = time.perf_counter() - started
        with DeepfakeClient(config, max_in_flight=1) as client:
            started = time.perf_counter()
            client.analyze_video(path, 2.0)
            one_at_a_time = time.perf_counter() - started
        frames = len(analysis.frames)
        return {
            "frames": frames,
            "pipelined_s": pipelined,
            "one_at_a_time_s": one_at_a_time,
            "pipelined_fps": frames / pipelined,
            "one_at_a_time_fps": frames / one_at_a_time,
            "speedup": one_at_a_time / pipelined,
        }

    def client_memory(self, ts: TorchServe, path: Path) -> float:
        """Peak RSS (MB) of the CLI analysing ``path``, in its own process."""
        # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report this torch-laden parent
        code = (
            "import re, sys; from deepfake_client._cli import main; code = main(sys.argv[1:]); "
            "status = open('/proc/self/status').read(); "
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024, file=sys.stderr); sys.exit(code)"
        )
        command = [
            sys.executable,
            "-c",
            code,
            "video",
            str(path),
            "--quiet",
            "--url",
            ts.inference_url,
            "--management-url",
            ts.management_url,
            "--key-file",
            str(ts.key_file),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1200)
        return float(result.stderr.strip().splitlines()[-1])


def worker_rss_mb(ts: TorchServe) -> float:
    import psutil

    root = psutil.Process(ts.pid())
    return sum(p.memory_info().rss for p in root.children(recursive=True)) / 2**20


def run(args: argparse.Namespace) -> dict:
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(Path(tmp))
        video_720p = write_video(Path(tmp) / "720p.mp4", args.video_seconds)
        short = write_video(Path(tmp) / "short.mp4", args.video_seconds, size=(640, 360))
        long = write_video(Path(tmp) / "long.mp4", args.video_seconds * 4, size=(640, 360))
        ts = bench.server("main")
        try:
            results["worker_rss_mb"] = worker_rss_mb(ts)
            results["load"] = [bench.load(ts, c, args.requests) for c in (1, 8, 16, 32)]
            results["video"] = bench.video(ts, video_720p)
            results["client_peak_rss_mb"] = {  # same resolution, 4x the length
                f"{args.video_seconds * 4:g}s_360p": bench.client_memory(ts, long),
                f"{args.video_seconds:g}s_360p": bench.client_memory(ts, short),
            }
            DeepfakeClient(
                ClientConfig(base_url=ts.inference_url, management_url=ts.management_url, key_file=ts.key_file)
            ).scale(2)
            results["two_workers"] = bench.load(ts, 16, args.requests)
        finally:
            ts.stop()
        results["batch_delay"] = []
        for delay in (0, 50):
            ts = bench.server(f"delay{delay}", max_batch_delay=delay)
            try:
                results["batch_delay"].append(
                    {
                        "max_batch_delay_ms": delay,
                        "single": bench.load(ts, 1, args.requests // 2),
                        "crowd": bench.load(ts, 16, args.requests),
                    }
                )
            finally:
                ts.stop()
        default = {"max_batch_delay_ms": 20, "single": results["load"][0], "crowd": results["load"][2]}
        results["batch_delay"].insert(1, default)
    return results


def checks(results: dict) -> list[tuple[str, bool, str]]:
    single, crowd = results["load"][0], results["load"][2]
    memory = list(results["client_peak_rss_mb"].values())
    growth, allowed = memory[0] - memory[1], TARGETS["client_memory_growth_mb"]
    return [
        (
            "video analysis vs one frame at a time",
            results["video"]["speedup"] >= TARGETS["video_speedup"],
            f"{results['video']['speedup']:.2f}x (target >= {TARGETS['video_speedup']}x)",
        ),
        (
            "batching gain, 16 concurrent vs 1",
            crowd["images_per_s"] / single["images_per_s"] >= TARGETS["batched_throughput_gain"],
            f"{crowd['images_per_s'] / single['images_per_s']:.2f}x (target >= {TARGETS['batched_throughput_gain']}x)",
        ),
        ("TorchServe ran batches larger than 1 under load", crowd["max_batch"] > 1, f"max batch {crowd['max_batch']}"),
        (
            "client memory does not grow with video length",
            growth <= allowed,
            f"{growth:+.1f} MB for a 4x longer video (target <= {allowed:g} MB)",
        ),
        (
            "1 worker at least as fast as 2 on this machine",
            crowd["images_per_s"] >= results["two_workers"]["images_per_s"] * 0.95,
            f"{crowd['images_per_s']:.1f} vs {results['two_workers']['images_per_s']:.1f} images/s",
        ),
    ]


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark",
        "",
        f"Measured by `make benchmark` (`python -m scripts.benchmark`) on {m['cpus']} CPU cores ({m['processor']}), "
        f"Python {m['python']}, torch {m['torch']}; ResNet18, 224x224 JPEG frames, TorchServe 0.12, 1 worker, "
        "batchSize 8 unless stated. Numbers vary run to run by roughly 10%.",
        "",
        "## Targets",
        "",
        "| check | result | measured |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |" for name, ok, detail in checks(results)]
    lines += [
        "",
        "## Throughput and latency (maxBatchDelay 20 ms)",
        "",
        "| concurrent requests | images/s | p50 ms | p95 ms | mean batch | max batch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['concurrency']} | {r['images_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
        f"{r['mean_batch']:.1f} | {r['max_batch']} |"
        for r in results["load"]
    ]
    two = results["two_workers"]
    lines += [
        "",
        f"Two workers, 16 concurrent: {two['images_per_s']:.1f} images/s, p50 {two['p50_ms']:.0f} ms "
        f"(one worker: {results['load'][2]['images_per_s']:.1f} images/s).",
        "",
        "## maxBatchDelay",
        "",
        "| maxBatchDelay ms | lone request p50 ms | 16 concurrent images/s | mean batch |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {d['max_batch_delay_ms']} | {d['single']['p50_ms']:.0f} | {d['crowd']['images_per_s']:.1f} | "
        f"{d['crowd']['mean_batch']:.1f} |"
        for d in results["batch_delay"]
    ]
    v = results["video"]
    lines += [
        "",
        "## Video, end to end",
        "",
        f"{v['frames']} frames sampled at 2 fps from a 720p H.264 video: {v['pipelined_s']:.1f} s with frames in "
        f"flight while decoding continues ({v['pipelined_fps']:.1f} frames/s), {v['one_at_a_time_s']:.1f} s one "
        f"frame at a time like the original app ({v['one_at_a_time_fps']:.1f} frames/s).",
        "",
        "## Memory",
        "",
        f"TorchServe worker processes: {results['worker_rss_mb']:.0f} MB resident.",
        "Client (CLI) peak resident memory: "
        + ", ".join(f"{k}: {v:.0f} MB" for k, v in results["client_peak_rss_mb"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per load level")
    parser.add_argument("--video-seconds", type=float, default=20.0)
    parser.add_argument("--report", type=Path, default=Path("docs/benchmark.md"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    results = run(args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(markdown(results))
    args.report.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0 if all(ok for _, ok, _ in checks(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
