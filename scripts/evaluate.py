"""Evaluate a detector on labelled images and videos: accuracy, ROC AUC, EER, ECE, video AUC.

    python -m scripts.evaluate --weights runs/r18/best_ResNet18.pth --images path/test --videos path/videos
    python -m scripts.evaluate --archive model_store/deepfake.mar --images path/test   # its runtime, in-process
    python -m scripts.evaluate --server http://127.0.0.1:8080 --images path/test     # via TorchServe

Both folders hold one subfolder per label (``real/``, ``fake/``). Frame-level metrics score every
image or sampled frame by its fake probability (with the archive's temperature). Video-level AUC
scores each video by its aggregated frame probabilities, keyed by the video's full path as
DeepfakeBench does. In-process runs use the server's own code path: the client's 2 fps sampling
and JPEG frames, then ``DetectorService`` (the handler's batched inference): torch fp32 for a
checkpoint, or the archive's own runtime and precision mode for ``--archive``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deepfake_client import (
    ClientConfig,
    DeepfakeClient,
    DeepfakeError,
    FrameResult,
    Prediction,
    encode_frame,
    sample_frames,
    top_k_mean,
)
from deepfake_client._aggregate import confident_strategy
from handler.calibration import expected_calibration_error
from handler.checkpoint import CheckpointError
from handler.contract import ErrorAnswer
from handler.service import DetectorService
from handler.settings import ModelSettings, SettingsError
from scripts.archive import load_archive, settings_from_files, sidecar_files
from scripts.data import labelled_files
from scripts.metrics import accuracy, equal_error_rate, roc_auc

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
VIDEO_SCORES = {
    "mean": lambda probs: sum(probs) / len(probs),
    "confident": confident_strategy,
    "topk": lambda probs: top_k_mean(probs, 5),
}


def frame_metrics(fake_probs: Sequence[float], is_fake: Sequence[int]) -> dict[str, float]:
    """Accuracy (at 0.5), ROC AUC, EER, ECE (15 bins) and NLL of fake probabilities."""
    probs = torch.tensor([[1 - p, p] for p in fake_probs], dtype=torch.float64)
    targets = torch.tensor(is_fake)
    true_class = probs[torch.arange(len(targets)), targets].clamp_min(1e-12)
    return {
        "samples": len(fake_probs),
        "accuracy": accuracy(fake_probs, is_fake),
        "auc": roc_auc(fake_probs, is_fake),
        "eer": equal_error_rate(fake_probs, is_fake),
        "ece": expected_calibration_error(probs, targets),
        "nll": float(-true_class.log().mean()),  # over-confident mistakes weigh heavily here
    }


class InProcess:
    """The handler's inference code, without a server."""

    def __init__(self, service: DetectorService, batch_size: int = 8):
        self.service = service
        self.batch_size = batch_size

    def _answers(self, payloads: list[bytes]) -> list[Prediction | None]:
        """One answer per payload; None where a face-crop archive found no face."""
        answers: list[Prediction | None] = []
        for start in range(0, len(payloads), self.batch_size):
            for answer in self.service.predict(payloads[start : start + self.batch_size]):
                if isinstance(answer, ErrorAnswer):
                    if not answer.is_no_face:
                        raise ValueError(answer.message)
                    answer = None
                answers.append(answer)
        return answers

    def images(self, paths: Sequence[Path]) -> list[float | None]:
        return [a.fake_probability if a else None for a in self._answers([p.read_bytes() for p in paths])]

    def video_frames(self, path: Path, fps: float) -> list[FrameResult]:
        """Like DeepfakeClient.analyze_video's frames: same sampling, same JPEG frames."""
        samples, frames = [], []
        settings = self.service.settings
        size = None if settings.crop == "face" else settings.image_size  # faces are found in the full frame
        for sample in sample_frames(path, fps):
            payload = encode_frame(sample.image, size=size)
            samples.append((sample.index, sample.time, sample.frame_time, sample.frame_number, payload))
            if len(samples) == self.batch_size:
                frames += self._frames(samples)
                samples = []
        return frames + self._frames(samples)

    def _frames(self, samples: list[tuple]) -> list[FrameResult]:
        answers = self._answers([payload for *_, payload in samples])
        return [
            FrameResult(*meta, prediction=a, no_face=a is None) for (*meta, _), a in zip(samples, answers, strict=True)
        ]

    def video(self, path: Path, fps: float) -> list[float]:
        """The fake probability of every frame with an answer (face-crop archives: with a face)."""
        return [f.prediction.fake_probability for f in self.video_frames(path, fps) if f.prediction is not None]


class ViaServer:
    """The same questions, asked to a running TorchServe through the client."""

    def __init__(self, client: DeepfakeClient):
        self.client = client

    def images(self, paths: Sequence[Path]) -> list[float | None]:
        results = self.client.predict_images(paths)
        failed = [r for r in results if r.prediction is None and not r.no_face]
        if failed:
            raise ValueError(f"{len(failed)} images refused, first: {failed[0].error}")
        return [r.prediction.fake_probability if r.prediction else None for r in results]

    def video(self, path: Path, fps: float) -> list[float]:
        analysis = self.client.analyze_video(path, fps)
        return [f.prediction.fake_probability for f in analysis.frames if f.prediction is not None]


def evaluate(
    predictor: InProcess | ViaServer,
    settings: ModelSettings,
    images: Path | None,
    videos: Path | None,
    fps: float = 2.0,
    video_score: str = "mean",
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    fake_index = settings.fake_index
    if images:
        items = labelled_files(images, settings.labels)
        scored = [(prob, y) for prob, (_, y) in zip(predictor.images([p for p, _ in items]), items, strict=True)]
        answered = [(prob, y) for prob, y in scored if prob is not None]  # face-crop archives: faces only
        if not answered:
            raise ValueError(f"no image of {images} could be scored (no face in any of them?)")
        probs, labels = [prob for prob, _ in answered], [int(y == fake_index) for _, y in answered]
        no_face = len(scored) - len(answered)
        report["images"] = {"folder": str(images), **frame_metrics(probs, labels), "no_face": no_face}
    if videos:
        items = labelled_files(videos, settings.labels, VIDEO_SUFFIXES)
        frame_probs, frame_labels, per_video = [], [], {}
        for path, label in items:
            probs = predictor.video(path, fps)
            frame_probs += probs
            frame_labels += [int(label == fake_index)] * len(probs)
            per_video[str(path.resolve())] = {
                "label": int(label == fake_index),
                "score": VIDEO_SCORES[video_score](probs),
                "frames": len(probs),
            }
        scores = [v["score"] for v in per_video.values()]
        labels = [v["label"] for v in per_video.values()]
        report["video_frames"] = {"folder": str(videos), "fps": fps, **frame_metrics(frame_probs, frame_labels)}
        report["videos"] = {
            "folder": str(videos),
            "score": video_score,
            "count": len(per_video),
            "auc": roc_auc(scores, labels),
            "accuracy": accuracy(scores, labels),
            "per_video": per_video,
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for key, title in (("images", "Images"), ("video_frames", "Video frames")):
        if key in report:
            r = report[key]
            nll = f"  NLL {r['nll']:.4f}" if "nll" in r else ""  # reports written before NLL was added lack it
            no_face = f"; {r['no_face']} without a face left out" if r.get("no_face") else ""
            lines.append(
                f"{title} ({r['samples']} from {r['folder']}{no_face}): accuracy {r['accuracy']:.4f}  "
                f"AUC {r['auc']:.4f}  EER {r['eer']:.4f}  ECE {r['ece']:.4f}{nll}"
            )
    if "videos" in report:
        r = report["videos"]
        lines.append(
            f"Videos ({r['count']}, score = {r['score']} of frame probabilities): "
            f"AUC {r['auc']:.4f}  accuracy {r['accuracy']:.4f}"
        )
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="checkpoint, for an in-process evaluation")
    parser.add_argument(
        "--settings-file",
        type=Path,
        action="append",
        default=None,
        help="settings JSON (default: <weights>.json and <weights>.calibration.json)",
    )
    parser.add_argument("--archive", type=Path, help="a .mar, evaluated in-process with its own runtime")
    parser.add_argument("--server", help="inference URL of a running TorchServe, instead of --weights")
    parser.add_argument("--management-url", default=None, help="default: the client's (env DEEPFAKE_MANAGEMENT_URL)")
    parser.add_argument("--model", default="deepfake")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--labels", default=None, help="label order (default: from the settings, Real,Fake)")
    parser.add_argument("--images", type=Path, help="labelled image folder")
    parser.add_argument("--videos", type=Path, help="labelled video folder")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--video-score", choices=sorted(VIDEO_SCORES), default="mean")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not (args.images or args.videos) or [bool(args.weights), bool(args.archive), bool(args.server)].count(True) != 1:
        print("evaluate: give --images and/or --videos, and one of --weights, --archive or --server", file=sys.stderr)
        return 2
    try:
        if args.archive:
            service = load_archive(args.archive)
            settings, predictor = service.settings, InProcess(service)
        elif args.weights:
            files = args.settings_file if args.settings_file is not None else sidecar_files(args.weights)
            values = settings_from_files(files)
            if args.labels:
                values["labels"] = args.labels
            settings = ModelSettings.from_mapping(values)
            predictor: InProcess | ViaServer = InProcess(DetectorService.from_checkpoint(args.weights, settings))
        else:
            config = ClientConfig.from_env(
                base_url=args.server, management_url=args.management_url, model=args.model, key_file=args.key_file
            )
            client = DeepfakeClient(config)
            settings = ModelSettings.from_mapping(client.describe().get("customizedMetadata", {}).get("settings", {}))
            predictor = ViaServer(client)
        report = evaluate(predictor, settings, args.images, args.videos, args.fps, args.video_score)
    except (CheckpointError, SettingsError, FileNotFoundError, ValueError, DeepfakeError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
