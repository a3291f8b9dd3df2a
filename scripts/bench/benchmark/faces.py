"""Section 8: face-crop mode (detector recall and false faces on generated frames, images/s and the
clip beside full mode).
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

from deepfake_client import sample_frames
from handler.faces import detector_for
from handler.settings import ModelSettings
from scripts.bench.benchmark.harness import CONCURRENCY, Subject, load, serving, with_model_config, write_video
from scripts.bench.benchmark.video import video_ours
from scripts.operations.archives import (
    DEFAULT_FACE_WORKERS,
)
from scripts.synthetic.faces import face_frames


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
