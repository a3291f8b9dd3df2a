"""Section 8: face-crop mode (detector recall and false faces on generated frames, images/s and the
clip beside full mode).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake_client import encode_frame, sample_frames
from handler.faces import FaceDetector, detector_for, stage_thresholds
from handler.mtcnn import Mtcnn
from handler.preprocessing import decode_image, decode_pixels
from handler.runtimes import openvino_core, share_cores
from handler.settings import ModelSettings
from scripts.bench.benchmark.harness import (
    CONCURRENCY,
    Subject,
    cpu_seconds,
    load,
    merged_rounds,
    running_service_warm_up,
    serving,
    with_model_config,
    write_video,
)
from scripts.bench.benchmark.video import video_ours
from scripts.operations.archives import DEFAULT_FACE_WORKERS
from scripts.operations.precision import DEFAULT_PRECISION
from scripts.operations.torchserve import TorchServe
from scripts.synthetic.faces import face_frames


def _close(box: tuple[float, ...], expected: tuple[float, ...], tolerance: float = 10.0) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))


class _Timed:
    """One of the detector's networks, adding up the time it runs (section 8's breakdown)."""

    def __init__(self, network: Any):
        self.inner, self.seconds = network, 0.0

    def __call__(self, batch: torch.Tensor) -> Any:
        started = time.perf_counter()
        try:
            return self.inner(batch)
        finally:
            self.seconds += time.perf_counter() - started


@contextlib.contextmanager
def a_face_workers_share() -> Iterator[None]:
    """torch's and OpenVINO's threads as in each of a face archive's DEFAULT_FACE_WORKERS workers
    (runtimes.share_cores), restored after; the detector's networks compiled meanwhile are dropped."""
    core = openvino_core()
    torch_threads = torch.get_num_threads()
    openvino = {name: core.get_property("CPU", name) for name in ("INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING")}
    share_cores(DEFAULT_FACE_WORKERS)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        core.set_property("CPU", openvino)
        FaceDetector._mtcnn.cache_clear()


def _breakdown(mtcnn: Mtcnn, frames: list[Any]) -> dict[str, float]:
    """Where a frame's detection time goes: PNet over the pyramid, RNet and ONet on the crops, and the
    rest (the pyramid, the crops, candidates and NMS), in ms per frame."""
    networks = [_Timed(network) for network in mtcnn.networks]
    timed = Mtcnn(*networks, mtcnn.min_face_size, mtcnn.thresholds)
    started = time.perf_counter()
    for image, _ in frames:
        timed.detect(np.asarray(image.convert("RGB")))
    total = (time.perf_counter() - started) / len(frames) * 1e3
    pnet, rnet, onet = (network.seconds / len(frames) * 1e3 for network in networks)
    return {"pnet_ms": pnet, "rnet_onet_ms": rnet + onet, "pixels_ms": total - pnet - rnet - onet}


def face_detection(settings: ModelSettings, count: int) -> dict[str, float]:
    """The handler's detector on 720p frames with a real face at a known place (and some without): its
    recall and false faces, its time per frame on one core (a face worker's share, DEFAULT_FACE_WORKERS
    workers of one thread each) beside facenet-pytorch's own ``MTCNN.detect`` on the same frames, how
    far its boxes and scores are from that path's, and where its time goes (``_breakdown``)."""
    from facenet_pytorch import MTCNN

    detector = detector_for(settings)
    reference = MTCNN(
        keep_all=True,
        post_process=False,
        min_face_size=detector.min_face_size,
        thresholds=list(stage_thresholds(detector.threshold)),
    )
    faces = found = false = no_face_images = count_mismatches = 0
    times, reference_times, box_gaps, score_gaps = [], [], [0.0], [0.0]
    with a_face_workers_share():
        frames = list(face_frames(count))
        detector.detect(frames[0][0])  # load the networks outside the timing
        for image, box in frames:
            started = time.perf_counter()
            detected = detector.detect(image)
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            boxes, scores = reference.detect(image)
            reference_times.append(time.perf_counter() - started)
            pairs = [] if boxes is None else zip(boxes, scores, strict=True)
            expected = [(b, s) for b, s in pairs if s >= detector.threshold]
            count_mismatches += len(expected) != len(detected)
            for face in detected:
                near, score = min(expected, key=lambda item: abs(item[0][0] - face.box[0]), default=(None, 0.0))
                if near is not None:
                    box_gaps.append(max(abs(a - b) for a, b in zip(face.box, near, strict=True)))
                    score_gaps.append(abs(face.score - score))
            hits = [face for face in detected if box is not None and _close(face.box, box)]
            false += len(detected) - len(hits[:1])
            faces += box is not None
            no_face_images += box is None
            found += bool(hits)
        breakdown = _breakdown(detector._mtcnn(detector.min_face_size, detector.threshold), frames)
    return {
        "faces": faces,
        "found": found,
        "recall": found / faces,
        "no_face_images": no_face_images,
        "false_faces": false,
        "ms_per_720p_frame": statistics.mean(times) * 1e3,
        "facenet_ms_per_720p_frame": statistics.mean(reference_times) * 1e3,
        "max_box_gap_px": max(box_gaps),
        "max_score_gap": max(score_gaps),
        "count_mismatches": count_mismatches,  # frames where the two paths found a different number of faces
        **breakdown,
    }


FACE_MODES = {
    "full": "full mode",
    "face": f"face mode, {DEFAULT_FACE_WORKERS} workers (default)",
    "face_1_worker": "face mode, 1 worker",
}


def clip_frame_costs(clip: Path, settings: ModelSettings) -> dict[str, float]:
    """What face mode adds to each of the clip's frames, in ms on one core (a face worker's share):
    detection on the clip's own frames (their textured background gives MTCNN more candidates than the
    still test frames), and the whole frame's JPEG, encoded by the client and decoded by the worker (to
    pixels: decode_pixels), against full mode's 224 px frame (decoded to an image): the section 8 check's
    explanation."""
    detector = detector_for(settings)
    times: dict[str, list[float]] = {
        name: [] for name in ("detection", "encode_whole", "encode_224", "decode_whole", "decode_224")
    }

    def timed(name: str, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = step(*args, **kwargs)
        times[name].append(time.perf_counter() - started)
        return result

    with a_face_workers_share():
        for index, sample in enumerate(sample_frames(clip, 2.0)):
            image = sample.image  # converted here, outside the timings
            if index == 0:
                detector.detect(image)  # loads the networks
            timed("detection", detector.detect, image)
            whole = timed("encode_whole", encode_frame, image, size=None)
            small = timed("encode_224", encode_frame, image)
            timed("decode_whole", decode_pixels, whole)  # as a face worker decodes it
            timed("decode_224", decode_image, small)
    return {f"{name}_ms": statistics.mean(values) * 1e3 for name, values in times.items()}


ROUNDS = 4  # full and face mode measured in turn, both served meanwhile: this VM's speed drifts within minutes
CLIP_RUNS = 2  # the clip, each mode in turn


def _side_by_side(
    servers: dict[str, TorchServe], payloads: list[bytes], requests_total: int, clip: Path, workdir: Path, quick: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each mode's 720p images/s and clip, the modes measured in turn (round 1 of each, round 2 of each, ...)
    while both are served: a drift of this machine's speed then weighs on both alike (one mode measured
    after the other, full mode's 720p rate was 63 and 93 images/s in two runs an hour apart). Each mode's
    ``idle_cores``: the most the other server used while it was measured."""
    rounds = 2 if quick else ROUNDS
    # a running service, as in sections 2-4: a face worker's first requests also run its detector's networks on
    # shapes new to them (OpenVINO prepares each on first use; after 32 requests, the first round measured 25
    # images/s, the next three ~50)
    for ts in servers.values():
        load(ts, payloads, CONCURRENCY, running_service_warm_up(quick))
    measured: dict[str, list[dict[str, Any]]] = {mode: [] for mode in servers}
    for _ in range(rounds):
        for mode, ts in servers.items():
            (idle,) = [other for name, other in servers.items() if name != mode]
            before, started = cpu_seconds(idle), time.perf_counter()
            measured[mode].append(load(ts, payloads, CONCURRENCY, requests_total // rounds, warm_up=False))
            after = cpu_seconds(idle)
            used = sum(after[part] - before[part] for part in ("worker", "frontend"))
            measured[mode][-1]["idle_cores"] = used / (time.perf_counter() - started)
    clips: dict[str, list[dict[str, float]]] = {mode: [] for mode in servers}
    for _ in range(1 if quick else CLIP_RUNS):
        for mode, ts in servers.items():
            clips[mode].append(video_ours(ts, clip, workdir))
    images = {mode: merged_rounds(rounds_of_mode) for mode, rounds_of_mode in measured.items()}
    video = {
        mode: {**runs[-1], "end_to_end_s": statistics.mean(r["end_to_end_s"] for r in runs),
               "runs": [r["end_to_end_s"] for r in runs]}
        for mode, runs in clips.items()
    }  # fmt: skip
    return images, video


def face_mode(
    subject: Subject, archive: Path, workdir: Path, seconds: float, requests_total: int, quick: bool
) -> dict[str, Any]:
    """Face-crop mode next to full mode, same weights and runtime: detection quality, 720p images served,
    a 60 s 720p clip with a face end to end (both measured in turn while both modes are served), one
    face worker of all the cores after, and the detection done by the client instead."""
    results: dict[str, Any] = {
        "detection": face_detection(subject.settings, 12 if quick else 48),
        "warm_up": running_service_warm_up(quick),
    }
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
    with contextlib.ExitStack() as stack:
        servers = {
            mode: stack.enter_context(serving(archives[mode], workdir / f"ts_crop_{mode}"))[0]
            for mode in ("full", "face")
        }
        results["images_720p"], results["video"] = _side_by_side(
            servers, payloads, requests_total, clip, workdir, quick
        )
    with serving(archives["face_1_worker"], workdir / "ts_crop_face_1_worker") as (ts, _):
        load(ts, payloads, CONCURRENCY, running_service_warm_up(quick))
        results["images_720p"]["face_1_worker"] = load(ts, payloads, CONCURRENCY, requests_total, warm_up=False)
        results["video"]["face_1_worker"] = video_ours(ts, clip, workdir)
    results["clip_frame_costs"] = clip_frame_costs(clip, subject.settings)
    # the alternative: the client finds the faces itself (same detector) and sends 224 px crops
    detector = detector_for(subject.settings)
    started = time.perf_counter()
    for sample in sample_frames(clip, 2.0):
        detector.detect(sample.image)
    results["video"]["client_detection_s"] = time.perf_counter() - started
    return results


def faces_markdown(faces: dict[str, Any], seconds: float) -> str:
    """Section 8 of the report: the detector, 720p images and the clip in face mode beside full mode."""
    d, images, video = faces["detection"], faces["images_720p"], faces["video"]
    lines = [
        f"## 8. Face-crop mode (`CROP=face`), next to full mode: {DEFAULT_PRECISION}, the same weights",
        "",
        f"Detection (MTCNN, facenet-pytorch) on {d['faces'] + d['no_face_images']} 1280x720 frames, real faces "
        f"from scikit-image pasted at known places and scales (~45-110 px), {d['no_face_images']} of them with no "
        f"face: {d['found']}/{d['faces']} found, {d['false_faces']} false, {d['ms_per_720p_frame']:.0f} ms per "
        "frame in-process on one core (a face worker's share), against "
        f"{d['facenet_ms_per_720p_frame']:.0f} ms for facenet-pytorch's own `MTCNN.detect` on the same frames "
        f"(boxes at most {d['max_box_gap_px']:.3f} px and scores {d['max_score_gap']:.5f} apart). `handler.mtcnn` "
        "resamples the pyramid and the candidates' crops from the frame's integral image (compiled by numba) and "
        "runs the three networks compiled by OpenVINO; of a frame's time, PNet over the ~9 pyramid levels takes "
        f"{d['pnet_ms']:.1f} ms, RNet and ONet on the crops {d['rnet_onet_ms']:.1f} ms, the rest (pyramid, crops, "
        f"candidates, NMS) {d['pixels_ms']:.1f} ms.",
        "",
        "| 1280x720 JPEGs with a face | images/s | p50 ms | p99 ms | mean batch (crops) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {FACE_MODES[mode]}, {CONCURRENCY} concurrent clients | {r['images_per_s']:.1f} | {r['p50_ms']:.0f} | "
        f"{r['p99_ms']:.0f} | {r.get('mean_batch', float('nan')):.1f} |"
        for mode, r in images.items()
    ]
    lines += _rounds_markdown(images, video, faces.get("warm_up"))
    lines += [
        "",
        f"A {seconds:g} s 720p clip with a face moving across it, at 2 fps with `deepfake-detect`: "
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
    return "\n".join(lines)


def round_ratios(images: dict[str, Any]) -> list[float]:
    """Face mode's images/s over full mode's, round by round (``_side_by_side``); none for a report from
    before the modes were measured in turn."""
    full, face = images["full"], images["face"]
    return [b / a for a, b in zip(full.get("rounds", []), face.get("rounds", []), strict=True)]


def _rounds_markdown(images: dict[str, Any], video: dict[str, Any], warm_up: int | None) -> list[str]:
    """How full and face mode were measured side by side (``_side_by_side``): each round's figures, and the
    requests each server answered before (none said for a run from before that warm-up)."""
    full, face = images["full"], images["face"]
    ratios = round_ratios(images)
    if not ratios:
        return []
    per_round = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(full["rounds"], face["rounds"], strict=True))
    clips = ", ".join(f"{a:.2f}/{b:.2f} s" for a, b in zip(video["full"]["runs"], video["face"]["runs"], strict=True))
    return [
        "",
        f"Full mode and face mode ({DEFAULT_FACE_WORKERS} workers) were served at once"
        + (f", each answered {warm_up} requests first (a running service)," if warm_up else "")
        + " and measured in turn, "
        f"{len(ratios)} rounds of {full['requests'] // len(ratios)} requests each (full/face images/s per round: "
        f"{per_round}; face mode {min(ratios):.0%}-{max(ratios):.0%} of full mode round by round), then the clip "
        f"in turn (full/face: {clips}; the figures are the means).{_idle(full, face)} One worker of all the cores "
        "was measured alone, after.",
    ]


def _idle(full: dict[str, Any], face: dict[str, Any]) -> str:
    if "idle_cores" not in full:  # measured before the idle server's CPU was
        return ""
    idle = max(full["idle_cores"], face["idle_cores"])
    return f" The server not being measured used at most {idle:.2f} cores meanwhile."
