"""Section 5: a 60 s 720p clip analysed end to end by ``deepfake-detect``, beside the original app's path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av

from deepfake_client import encode_frame, sample_frames
from handler.checkpoint import load_model
from scripts.bench.benchmark.harness import Subject, batch_times, log_size
from scripts.bench.benchmark.inprocess import classify_like_the_original_app
from scripts.operations.torchserve import TorchServe


def video_ours(
    ts: TorchServe, clip: Path, workdir: Path, per_request: int | None = None, halves: bool = False
) -> dict[str, float]:
    """``deepfake-detect video`` end to end; ``per_request``: frames per request, the client's default
    (what a user gets) unless given; ``halves``: also its two halves measured apart and what its
    sampling decodes (section 5's explanation; ~10 s the other sections' rows do without)."""
    command = [
        str(Path(sys.executable).with_name("deepfake-detect")), "video", str(clip), "--json", "--quiet",
        "--url", ts.inference_url, "--management-url", ts.management_url, "--key-file", str(ts.key_file),
    ]  # fmt: skip
    if per_request is not None:
        command += ["--frames-per-request", str(per_request)]
    offset = log_size(ts)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=True)
    end_to_end = time.perf_counter() - started
    frames = len(json.loads(result.stdout)["frames"])
    inference_ms = batch_times(ts, offset).get("inference_ms_total", float("nan"))
    measured = {"frames": frames, "end_to_end_s": end_to_end, "inference_s": inference_ms / 1e3}
    if not halves:
        return measured
    started = time.perf_counter()
    decoded = sum(1 for sample in sample_frames(clip, 2.0) if encode_frame(sample.image))
    decode_s = time.perf_counter() - started
    assert decoded == frames
    started, cpu = time.perf_counter(), time.process_time()
    assert sum(1 for _ in sample_frames(clip, 2.0)) == frames  # no conversion: the frames' images are lazy
    sampling = {"sampling_s": time.perf_counter() - started, "sampling_cpu_s": time.process_time() - cpu}
    every_frame_s, every_frame_cpu_s = decode_every_frame(clip)
    return {
        **measured,
        "decode_s": decode_s,
        **sampling,
        "every_frame_s": every_frame_s,
        "every_frame_cpu_s": every_frame_cpu_s,
    }


def decode_every_frame(clip: Path) -> tuple[float, float]:
    """Seconds, and CPU seconds of all its threads, to decode every frame of the clip with the client's
    decoder threads: what sampling cost before it skipped the frames no sample needs."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started, cpu = time.perf_counter(), time.process_time()
        for _ in container.decode(stream):
            pass
        return time.perf_counter() - started, time.process_time() - cpu


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
