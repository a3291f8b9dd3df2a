"""Evaluate a detector on labelled images and videos: accuracy, ROC AUC, EER, ECE, video AUC.

    python -m scripts.modeling.evaluate --weights runs/r18/best_ResNet18.pth --images path/test --videos path/videos
    python -m scripts.modeling.evaluate --archive model_store/deepfake.mar --images path/test  # in-process
    python -m scripts.modeling.evaluate --server http://127.0.0.1:8080 --images path/test  # via TorchServe

Both folders hold one subfolder per label (``real/``, ``fake/``). Frame-level metrics score every
image or sampled frame by its fake probability (with the archive's temperature). Video-level AUC
scores each video by its aggregated frame probabilities, keyed by the video's full path as
DeepfakeBench does. In-process runs use the server's own code path: the client's 2 fps sampling
and JPEG frames, then ``DetectorService`` (the handler's batched inference): torch fp32 for a
checkpoint, or the archive's own runtime and precision mode for ``--archive``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfake_client import (
    DEFAULT_FPS,
    LIKELY_DEEPFAKE,
    MANIPULATED_SEGMENTS,
    MANIPULATED_THROUGHOUT,
    AggregationConfig,
    ClientConfig,
    DeepfakeClient,
    DeepfakeError,
    FrameResult,
    Prediction,
    Segment,
    confident_strategy,
    encode_frame,
    peak_point,
    sample_frames,
    summarise,
    sustained_segments,
    top_k_mean,
)
from deepfake_contract import DEFAULT_MODEL, EXPLANATION_METHOD, ErrorAnswer
from handler.calibration import expected_calibration_error
from handler.checkpoint import CheckpointError
from handler.explain import GradCam, target_layer
from handler.service import DetectorService
from handler.settings import ModelSettings, SettingsError
from scripts.modeling.data import labelled_files
from scripts.modeling.metrics import accuracy, equal_error_rate, roc_auc
from scripts.operations.archives import load_archive, settings_from_files, sidecar_files

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
            for answer in self.service.predict(payloads[start : start + self.batch_size])[0]:
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

    def video_frames(self, path: Path, fps: float) -> list[FrameResult]:
        return self.client.analyze_video(path, fps).frames

    def video(self, path: Path, fps: float) -> list[float]:
        return [f.prediction.fake_probability for f in self.video_frames(path, fps) if f.prediction is not None]


def evaluate(
    predictor: InProcess | ViaServer,
    settings: ModelSettings,
    images: Path | None,
    videos: Path | None,
    fps: float = DEFAULT_FPS,
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


# --- the video verdict on partly manipulated videos -----------------------------------------------------------
# The grid the rule's constants are chosen from (scripts/modeling/evaluate.py --tune; AggregationConfig's defaults).
# Minimum durations from 1 s: at 2 fps one sampled frame stands for 0.5 s, and a one-frame blip must never count.
VERDICT_GRID = {
    "segment_threshold": (0.5, 0.6, 0.7, 0.8, 0.9),
    "segment_low": (0.2, 0.35, 0.5),
    "min_segment_seconds": (1.0, 1.5, 2.0),
}


def span_videos(folder: Path) -> dict[Path, tuple[float, float] | None]:
    """The clips of a span set (make_demo_data's spans/<set>/) and their manipulated [start, end), or None."""
    spans = json.loads((Path(folder) / "spans.json").read_text())
    return {
        Path(folder) / name: (None if span is None else (float(span[0]), float(span[1])))
        for name, span in spans.items()
    }


def _overlap(segments: Sequence[Segment], span: tuple[float, float]) -> float:
    return sum(max(0.0, min(s.end, span[1]) - max(s.start, span[0])) for s in segments)


def verdict_metrics(
    frames_by_video: dict[Path, list[FrameResult]],
    spans: dict[Path, tuple[float, float] | None],
    fps: float,
    config: AggregationConfig | None = None,
) -> dict[str, Any]:
    """How the video verdict does: accuracy (manipulated or not, per video), the mean IoU in time of the found
    segments with the true span (partly manipulated videos), and the false-alarm rate on clean videos."""
    config = config or AggregationConfig()
    per_video, ious = {}, []
    for path, frames in frames_by_video.items():
        segments = sustained_segments(frames, 1 / fps, config)
        summary = summarise(frames, config, 1 / fps, segments)
        span = spans[path]
        flagged = summary.verdict in (MANIPULATED_SEGMENTS, MANIPULATED_THROUGHOUT)
        entry: dict[str, Any] = {
            "span": span,
            "verdict": summary.verdict,
            "reason": summary.reason,
            "correct": flagged == (span is not None),
            "ratio_verdict": summary.ratio_verdict,
            "ratio_correct": (summary.ratio_verdict == LIKELY_DEEPFAKE) == (span is not None),
        }
        if span is not None:
            inter = _overlap(segments, span)
            union = sum(s.end - s.start for s in segments) + (span[1] - span[0]) - inter
            entry["iou"] = inter / union if union else 0.0
            ious.append(entry["iou"])
        per_video[path.name] = entry
    clean = [v for v in per_video.values() if v["span"] is None]
    return {
        "videos": len(per_video),
        "accuracy": sum(v["correct"] for v in per_video.values()) / max(1, len(per_video)),
        "ratio_verdict_accuracy": sum(v["ratio_correct"] for v in per_video.values()) / max(1, len(per_video)),
        "mean_iou": sum(ious) / len(ious) if ious else float("nan"),
        "false_alarm_rate": sum(not v["correct"] for v in clean) / len(clean) if clean else float("nan"),
        "rule": {key: getattr(config, key) for key in VERDICT_GRID},
        "per_video": per_video,
    }


def tune_verdict(
    frames_by_video: dict[Path, list[FrameResult]], spans: dict[Path, tuple[float, float] | None], fps: float
) -> AggregationConfig:
    """The grid's rule with the fewest false alarms, then the best accuracy, then the best IoU; among rules tied on
    those, the shortest minimum duration (the shortest manipulation still found), then the highest floor and
    threshold (the fewest blips turned into segments)."""
    best: tuple | None = None
    for threshold in VERDICT_GRID["segment_threshold"]:
        for low in VERDICT_GRID["segment_low"]:
            for shortest in VERDICT_GRID["min_segment_seconds"]:
                config = AggregationConfig(segment_threshold=threshold, segment_low=low, min_segment_seconds=shortest)
                m = verdict_metrics(frames_by_video, spans, fps, config)
                key = (-m["false_alarm_rate"], m["accuracy"], round(m["mean_iou"], 3), -shortest, low, threshold)
                if best is None or key > best[0]:
                    best = (key, config)
    assert best is not None
    return best[1]


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (0 when either is constant)."""
    ranks = [np.argsort(np.argsort(x.ravel(), kind="stable"), kind="stable").astype(float) for x in (a, b)]
    if min(r.std() for r in ranks) == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(*ranks)[0, 1])


RANDOMISATIONS = 3  # seeds of the model-randomisation check, averaged


def randomised_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with its top layers re-initialised, from the layer the heatmaps are computed on
    (``handler.explain.target_layer``) to the classifier, in the order the model declares its modules: the
    cascading model-randomisation test of Adebayo et al. (2018), down to that layer."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    modules = [module for _, module in clone.named_modules()]
    explained = target_layer(clone)[1]
    top = modules[next(i for i, module in enumerate(modules) if module is explained) :]
    for module in top:
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone


def explanation_checks(service: DetectorService, fakes: Path, masks: Path, count: int = 100) -> dict[str, Any]:
    """Are the heatmaps about the manipulation? Measured on fake images whose manipulated region is known.

    Pointing game: how often the heatmap's peak falls inside the region, against chance (the region's
    share of the image: where a random point falls). Sanity check: the rank correlation between the
    trained model's maps and those of copies with randomised top layers; a map that ignores the weights
    (an edge detector) keeps a high correlation. One randomisation is a noisy draw (measured on one demo
    model's layer4 maps: 0.55, 0.19 and 0.49 for seeds 0-2), so the correlation is averaged over
    RANDOMISATIONS copies.
    """
    if service.grad_cam is None:
        raise ValueError("this model cannot be explained (no fp32 model)")
    grad_cam = service.grad_cam.get()
    randomised = [
        GradCam(randomised_copy(grad_cam.model, seed), grad_cam.target_index) for seed in range(RANDOMISATIONS)
    ]
    paths = [p for p in sorted(fakes.iterdir()) if (masks / f"{p.stem}.png").exists()][:count]
    if not paths:
        raise ValueError(f"no image of {fakes} has a mask in {masks}")
    hits, areas, correlations = [], [], []
    for path in paths:
        with Image.open(masks / f"{path.stem}.png") as mask_image:
            mask = np.asarray(mask_image.convert("L")) > 127
        explanation = service.explain(path.read_bytes())
        if isinstance(explanation, ErrorAnswer):
            raise ValueError(f"{path}: {explanation.message}")
        heatmap = explanation.heatmaps[0]
        x, y = peak_point(heatmap)
        hits.append(bool(mask[min(int(y), mask.shape[0] - 1), min(int(x), mask.shape[1] - 1)]))
        areas.append(float(mask.mean()))
        with Image.open(path) as image:
            batch = service.to_input(image.convert("RGB")).unsqueeze(0)
        maps = np.asarray(heatmap.values)
        correlations.append(np.mean([_rank_correlation(maps, copy_(batch)[0]) for copy_ in randomised]))
    return {
        "images": len(paths),
        "method": f"{EXPLANATION_METHOD} on {grad_cam.layer_name}",
        "pointing_game_hit_rate": float(np.mean(hits)),
        "chance_hit_rate": float(np.mean(areas)),
        "hits": int(sum(hits)),
        "randomised_rank_correlation": float(np.mean(correlations)),
        "randomisations": RANDOMISATIONS,
    }


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
    if "verdict" in report:
        r = report["verdict"]
        rule = ", ".join(f"{k} {v:g}" for k, v in r["rule"].items())
        lines.append(
            f"Video verdict ({r['videos']} partly manipulated and clean videos from {r['folder']}; rule {rule}): "
            f"accuracy {r['accuracy']:.4f}  segment IoU {r['mean_iou']:.4f}  false alarms {r['false_alarm_rate']:.4f}  "
            f"(the original ratio verdict: accuracy {r.get('ratio_verdict_accuracy', float('nan')):.4f})"
        )
    if "explanations" in report:
        r = report["explanations"]
        lines.append(
            f"Explanations ({r['method']}, {r['images']} fake images with masks): the heatmap's peak inside the "
            f"manipulated region {r['pointing_game_hit_rate']:.2f} of the time (chance {r['chance_hit_rate']:.2f}); "
            f"rank correlation with {RANDOMISATIONS} top-randomised models' maps {r['randomised_rank_correlation']:.2f}"
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
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--labels", default=None, help="label order (default: from the settings, Real,Fake)")
    parser.add_argument("--images", type=Path, help="labelled image folder")
    parser.add_argument("--videos", type=Path, help="labelled video folder")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--video-score", choices=sorted(VIDEO_SCORES), default="mean")
    parser.add_argument(
        "--spans",
        type=Path,
        help="a span set (spans.json + clips): report the video verdict's accuracy, IoU, false alarms",
    )
    parser.add_argument(
        "--tune", type=Path, help="another span set: choose the verdict rule's constants there, then report --spans"
    )
    parser.add_argument(
        "--masks",
        type=Path,
        help="masks of the fake images' manipulated regions (<mask folder>/<image name>.png): check the "
        "explanations against them (pointing game, model randomisation; in-process only)",
    )
    parser.add_argument("--json", type=Path, help="also write the full report here")
    return parser


def verdict_report(predictor: InProcess | ViaServer, spans: Path, tune: Path | None, fps: float) -> dict[str, Any]:
    """The video verdict on a span set, with the default rule or the one ``tune`` chose."""

    def frames(folder: Path) -> tuple[dict[Path, list[FrameResult]], dict[Path, tuple[float, float] | None]]:
        truth = span_videos(folder)
        return {path: predictor.video_frames(path, fps) for path in truth}, truth

    config = AggregationConfig()
    if tune is not None:
        config = tune_verdict(*frames(tune), fps)
    report = verdict_metrics(*frames(spans), fps, config)
    return {"folder": str(spans), "tuned_on": None if tune is None else str(tune), **report}


def main(argv: list[str] | None = None) -> int:
    return run(get_args_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """What the command line does, from its options (``scripts.options`` builds them for a caller)."""
    sources = [bool(args.weights), bool(args.archive), bool(args.server)].count(True)
    if args.masks and not (args.images and not args.server):
        print("evaluate: --masks needs --images (with a fake/ folder) and --weights or --archive", file=sys.stderr)
        return 2
    if not (args.images or args.videos or args.spans) or sources != 1:
        print("evaluate: give --images, --videos and/or --spans, and one of --weights, --archive or --server",
              file=sys.stderr)  # fmt: skip
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
        if args.spans:
            report["verdict"] = verdict_report(predictor, args.spans, args.tune, args.fps)
        if args.masks:
            assert isinstance(predictor, InProcess)
            report["explanations"] = explanation_checks(predictor.service, args.images / "fake", args.masks)
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
