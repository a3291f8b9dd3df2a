"""deepfake-detect: the command line over DeepfakeClient.

Exit codes: 0 ok; 2 bad input (unreadable file, refused image, bad video, bad option);
3 authentication (missing or wrong token); 4 server unavailable; 5 server error; 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from deepfake_client._aggregate import AggregationConfig
from deepfake_client._client import DeepfakeClient
from deepfake_client._config import (
    DEFAULT_FPS,
    DEFAULT_FRAMES_PER_REQUEST,
    DEFAULT_MANAGEMENT_URL,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MODEL,
    DEFAULT_PROTOCOL,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_DEADLINE,
    DEFAULT_URL,
    RETRY_STATUSES,
    ClientConfig,
    Timeouts,
    add_verbosity,
    show_client_log,
    split_urls,
)
from deepfake_client._exceptions import DeepfakeError, InputError, MalformedAnswerError
from deepfake_client._explain import save_overlay
from deepfake_client._media import VIDEO_FORMATS
from deepfake_client._plot import plot_timeline
from deepfake_client._progress import ProgressBar
from deepfake_client._results import FaceTrack, ImageResult, Prediction, VideoAnalysis, json_safe
from deepfake_client._scan import ScanTally, collect, scan, write_csv
from deepfake_client._video import native_frame_rate, probe_duration
from deepfake_contract import PROTOCOLS, READY, ContractError, ModelCard

EXIT_OK, EXIT_INPUT, EXIT_UNAVAILABLE = 0, 2, 4
DEFAULT_AGGREGATION = AggregationConfig()  # the CLI's defaults are the library's


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def image_block(source: str, p: Prediction) -> str:
    """The original app's detailed block for one image (face-crop archives: the most fake face's, then
    one line per face)."""
    softmax = "  ".join(f"{label} {prob:.4f}" for label, prob in p.probabilities.items())
    faces = [
        f"  Face {i + 1} at [{', '.join(f'{v:.0f}' for v in face.box)}] (detector {face.score:.3f}): "
        f"{face.prediction.label}, fake probability {face.prediction.fake_probability:.4f}"
        for i, face in enumerate(p.faces or [])
    ]
    return "\n".join(
        [
            f"Image: {source}",
            f"  Temperature:         {round(p.temperature, 4)}",
            f"  Logits:              [{', '.join(f'{x:.4f}' for x in p.logits)}]",
            f"  Softmax:             {softmax}",
            f"  Predicted class:     {p.label}",
            f"  Softmax confidence:  {p.softmax_confidence:.4f}",
            f"  Adjusted confidence: {p.adjusted_confidence:.4f}  "
            f"(sigmoid(|logit margin| / alpha), alpha {round(p.alpha, 4)})",
            *([f"  Faces:               {len(faces)} (the answer above is the most fake one's)"] if faces else []),
            *faces,
        ]
    )


def video_report(analysis: VideoAnalysis) -> str:
    s = analysis.summary
    seconds = analysis.frames[-1].time + 1 / analysis.fps if analysis.frames else 0.0
    no_face = f", {s.no_face_frames} without a face" if s.no_face_frames else ""
    threshold = analysis.thresholds.get("segment_threshold", DEFAULT_AGGREGATION.segment_threshold)
    lines = [
        f"Video: {analysis.source}",
        *([f"  Model:                    {analysis.model_notice}"] if analysis.model_notice else []),
        f"  Frames:                   {s.frames} sampled at {analysis.fps:g} fps ({seconds:.1f} s), "
        f"{s.analyzed} analysed, {s.failed} failed{no_face}",
        f"  Verdict:                  {s.verdict}: {s.reason}",
        f"  Ratio verdict:            {s.ratio_verdict} (the original app's: fake-frame ratio >= "
        f"{analysis.thresholds.get('fake_ratio_threshold', DEFAULT_AGGREGATION.fake_ratio_threshold):g})",
        f"  Fake-frame ratio:         {_fmt(s.fake_frame_ratio)} ({s.fake_frames}/{s.analyzed})",
        f"  Mean adjusted confidence: {_fmt(s.mean_adjusted_confidence)}",
        f"  Mean fake probability:    {_fmt(s.mean_fake_probability)}",
        f"  Top-{s.top_k} mean:               {_fmt(s.top_k_mean)}",
        f"  Confident-frame score:    {_fmt(s.confident_score)}",
    ]
    low = analysis.thresholds.get("segment_low", threshold)
    shortest = analysis.thresholds.get("min_segment_seconds", 0)
    if analysis.segments:
        lines.append(f"  Manipulated segments (from {threshold:g}, staying >= {low:g}, lasting >= {shortest:g} s):")
        lines += [
            f"    {seg.start:7.2f}s - {seg.end:7.2f}s  peak {seg.peak_probability:.3f} at {seg.peak_time:.2f}s "
            f"({seg.frames} frames, mean {seg.mean_probability:.3f})"
            for seg in analysis.segments
        ]
    else:
        lines.append(f"  Manipulated segments:     none lasting {shortest:g} s above {threshold:g}")
    if analysis.tracks:
        lines.append(f"  People (face tracks):     {len(analysis.tracks)}")
        lines += [f"    {track_line(track)}" for track in analysis.tracks]
    errors = [f for f in analysis.frames if f.error and not f.no_face]
    lines += [f"  Frame {f.index} at {f.time:.2f}s failed: {f.error}" for f in errors[:5]]
    return "\n".join(lines)


def track_line(track: FaceTrack) -> str:
    """One person of a face-crop analysis in one line: when in view, the scores, the manipulated segments."""
    seen = ", ".join(f"{start:.1f}-{end:.1f} s" for start, end in track.spans)
    segments = ", ".join(f"{s.start:.1f}-{s.end:.1f} s (peak {s.peak_probability:.2f})" for s in track.segments)
    manipulated = f"manipulated {segments}" if segments else "no manipulated segment"
    return (
        f"{track.name.capitalize()}: in view {seen} ({track.frames} frames), mean fake probability "
        f"{track.mean_fake_probability:.2f}, peak {track.peak_fake_probability:.2f} at {track.peak_time:.1f} s; "
        f"{manipulated}"
    )


def _dump(data: Any) -> str:
    """JSON with NaN (no frame analysed) written as null, which every JSON parser accepts."""
    return json.dumps(json_safe(data), indent=2, default=str)


# --- commands -------------------------------------------------------------------------------------
def _progress_bar(args: argparse.Namespace, total: int | None, label: str) -> ProgressBar:
    """A progress bar on a terminal's stderr, unless --quiet (never in pipes and logs)."""
    return ProgressBar(total, label, enabled=not args.quiet and sys.stderr.isatty())


def cmd_image(client: DeepfakeClient, args: argparse.Namespace) -> int:
    bar = _progress_bar(args, len(args.images), "images") if len(args.images) > 1 else None
    try:
        results: list[ImageResult] = client.predict_images(args.images, progress=bar)
    finally:
        if bar:
            bar.close()
    if args.json:
        print(_dump([r.to_dict() for r in results]))
    else:
        for result in results:
            if result.prediction is not None:
                print(image_block(result.source, result.prediction))
            elif result.no_face:  # an answer, not an error
                print(f"Image: {result.source}\n  No face: {result.error}")
            if result.model_notice and (result.prediction is not None or result.no_face):
                print(f"  Model:               {result.model_notice}")
    failed = [r for r in results if r.prediction is None and not r.no_face]
    for result in failed:  # errors on stderr, results on stdout
        print(f"deepfake-detect: {result.error}", file=sys.stderr)
    if args.explain:
        for result in results:
            if result.prediction is not None:
                path = explain_image(client, Path(result.source), args.explain)
                if not args.json:
                    print(f"Explanation of {result.source}: {path}")
    return EXIT_INPUT if failed else EXIT_OK


def explain_image(client: DeepfakeClient, source: Path, out_dir: Path) -> Path:
    """The overlay of ``source``'s explanation, written to OUT_DIR/<name>.explain.png."""
    explanation = client.explain(source)
    with Image.open(source) as image:
        return save_overlay(ImageOps.exif_transpose(image), explanation, out_dir / f"{source.stem}.explain.png")


def explain_frames(client: DeepfakeClient, analysis: VideoAnalysis, count: int, out_dir: Path) -> list[Path]:
    """Overlays of the ``count`` most fake frames: OUT_DIR/<video>_<time>s.explain.png, most fake first."""
    written = []
    for frame, image, explanation in client.explain_top_frames(analysis, count):
        name = f"{Path(analysis.source).stem}_{frame.time:07.2f}s.explain.png"
        written.append(save_overlay(image, explanation, out_dir / name))
    return written


def cmd_video(client: DeepfakeClient, args: argparse.Namespace) -> int:
    aggregation = _aggregation(args)
    showing = not args.quiet and sys.stderr.isatty()
    duration = probe_duration(args.video) if showing else None
    rate = min(args.fps, native_frame_rate(args.video) or args.fps) if showing else args.fps
    bar = _progress_bar(args, math.ceil(duration * rate) if duration else None, "frames")
    try:
        analysis = client.analyze_video(
            args.video, args.fps, aggregation=aggregation, image_format=args.format, progress=bar
        )
    finally:
        bar.close()
    for note in analysis.notes:
        print(f"deepfake-detect: note: {note}", file=sys.stderr)
    print(_dump(analysis.to_dict()) if args.json else video_report(analysis))
    if args.plot:
        path = plot_timeline(analysis, args.plot)
        if not args.json:
            print(f"  Timeline plot:            {path}")
    if args.explain_top:
        count, out_dir = args.explain_top
        for path in explain_frames(client, analysis, count, out_dir):
            if not args.json:
                print(f"  Explanation:              {path}")
    return EXIT_OK


def cmd_models(client: DeepfakeClient, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        print(_dump(models))
        return EXIT_OK
    for entry in models:
        workers = ", ".join(f"{w.get('id', '?')} {w.get('status', '?')}" for w in entry["workers"]) or "none"
        metadata = entry.get("customizedMetadata") or {}
        settings, runtime = metadata.get("settings") or {}, metadata.get("runtime") or {}
        if not isinstance(settings, dict) or not isinstance(runtime, dict):
            raise MalformedAnswerError(f"{entry.get('modelName')}: settings and runtime must be JSON objects", 200)
        print(
            f"{entry['modelName']} (version {entry.get('modelVersion')}): workers {workers}; "
            f"batchSize {entry.get('batchSize')}, maxBatchDelay {entry.get('maxBatchDelay')} ms"
        )
        if settings:
            print(
                f"  arch {settings.get('arch')}, mean {settings.get('mean')}, std {settings.get('std')}, "
                f"labels {settings.get('labels')}, T {settings.get('temperature')}, alpha {settings.get('alpha')}, "
                f"input {settings.get('image_size')}px, crop {settings.get('crop', 'full')}"
                + (
                    f" (margin {settings.get('face_margin')}, detector score >= {settings.get('face_threshold')}, "
                    f"up to {settings.get('max_faces')} faces of >= {settings.get('min_face_size')} px)"
                    if settings.get("crop") == "face"
                    else ""
                )
            )
        published = metadata.get("metadata")
        if isinstance(published, dict) and published.get("card"):
            try:
                card = ModelCard.from_json(published["card"])
            except ContractError as exc:
                raise MalformedAnswerError(
                    f"{entry.get('modelName')}: its model card does not fit: {exc}", 200
                ) from None
            print(model_card_block(card, str(published.get("notice", ""))))
        if runtime:
            device = runtime.get("device")
            line = f"  runs {runtime.get('precision')} on {runtime.get('engine')}"
            line += f" ({device})" if device and device != "cpu" else ""
            if runtime.get("threads"):
                line += f", {runtime['threads']} threads per worker"
            print(
                f"{line} (archive built for {runtime.get('requested')})"
                + (f"; fallback: {runtime['fallback']}" if runtime.get("fallback") else "")
            )
    return EXIT_OK


def model_card_block(card: ModelCard, notice: str = "") -> str:
    """The model card, a line a field ("unknown" where nobody said)."""
    held_out = ", ".join(f"{k} {v:.4f}" for k, v in card.held_out.items()) or "unknown"
    images = "unknown" if card.training_images is None else f"{card.training_images} images"
    return "\n".join(
        [
            *([f"  NOTE: {notice}"] if notice else []),
            f"  model card: trained on {card.trained_on} ({images}; classes {', '.join(card.classes) or 'unknown'})",
            f"    held-out: {held_out}",
            f"    calibration: {card.calibration}; precision check: {card.precision_check}",
            f"    intended use: {card.intended_use}",
            f"    known limits: {card.limits}",
        ]
    )


def cmd_health(client: DeepfakeClient, args: argparse.Namespace) -> int:
    status = client.health().get("status", "?")
    ready = client.ready()
    if args.json:
        print(_dump({"status": status, "model": client.config.model, "ready": ready}))
    else:
        print(f"server: {status}; model {client.config.model}: {READY if ready else f'NOT {READY}'}")
    return EXIT_OK if ready else EXIT_UNAVAILABLE


def _aggregation(args: argparse.Namespace) -> AggregationConfig:
    return AggregationConfig(
        fake_ratio_threshold=args.fake_ratio_threshold,
        segment_threshold=args.segment_threshold,
        segment_low=args.segment_low,
        min_segment_seconds=args.min_segment_seconds,
        top_k=args.top_k,
    )


def scan_table(tally: ScanTally, out: Path) -> str:
    """What a scan found: counts per verdict, then the failures with their reasons."""
    counts = ", ".join(f"{verdict} {count}" for verdict, count in sorted(tally.verdicts.items())) or "nothing answered"
    skipped = f", {tally.skipped} skipped (already in {out})" if tally.skipped else ""
    lines = [f"Scanned {tally.scanned} files ({tally.frames} images and frames analysed){skipped}: {counts}"]
    if tally.failures:
        lines.append(f"{len(tally.failures)} failed:")
        lines += [f"  {path}: {reason}" for path, reason in tally.failures[:20]]
        if len(tally.failures) > 20:
            lines.append(f"  ... and {len(tally.failures) - 20} more (see {out})")
    lines.append(f"Results: {out} (one JSON record per file)")
    return "\n".join(lines)


def cmd_scan(client: DeepfakeClient, args: argparse.Namespace) -> int:
    files = list(collect(args.paths))
    if not files:
        raise InputError(f"no files in {' '.join(args.paths)}")
    bar = _progress_bar(args, len(files), "files")
    done = [0]

    def on_file(record: dict) -> None:
        done[0] += 1
        bar(done[0])

    try:
        tally = scan(client, files, args.out, resume=args.resume, fps=args.fps, aggregation=_aggregation(args),
                     on_file=on_file)  # fmt: skip
    finally:
        bar.close()
    if args.csv:
        write_csv(args.out, args.csv)
    if args.json:
        print(_dump({"scanned": tally.scanned, "skipped": tally.skipped, "frames": tally.frames,
                     "verdicts": dict(tally.verdicts), "failures": [{"path": p, "error": e} for p, e in tally.failures],
                     "results": str(args.out)}))  # fmt: skip
    else:
        print(scan_table(tally, args.out))
    return EXIT_INPUT if tally.failures else EXIT_OK


def cmd_scale(client: DeepfakeClient, args: argparse.Namespace) -> int:
    answer = client.scale(args.workers, args.scale_model)
    print(_dump(answer) if args.json else answer["status"])
    return EXIT_OK


def client_version() -> str:
    try:
        return importlib.metadata.version("deepfake-client")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "(not installed)"


# --- parser -----------------------------------------------------------------------------------------
def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


class _ExplainTop(argparse.Action):
    """--explain-top K OUT_DIR -> (K, Path(OUT_DIR)); K a whole number from 1."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        count, folder = values
        if not count.isdigit() or int(count) < 1:
            parser.error(f"{option}: K must be a whole number of frames from 1, got {count[:40]!r}")
        setattr(namespace, self.dest, (int(count), Path(folder)))


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def get_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument(
        "--url",
        action="append",
        help=f"inference API (env DEEPFAKE_URL; default {DEFAULT_URL}). Repeat it (or separate URLs by "
        "commas) for replicas of the model: requests are spread over them, away from one that fails",
    )
    group.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help=f"wire format: native (/predictions) or oip, the Open Inference Protocol of KServe, Triton and "
        f"MLServer (/v2/models/<model>/infer) (env DEEPFAKE_PROTOCOL; default {DEFAULT_PROTOCOL})",
    )
    group.add_argument(
        "--management-url", help=f"management API (env DEEPFAKE_MANAGEMENT_URL; default {DEFAULT_MANAGEMENT_URL})"
    )
    group.add_argument("--model", default=DEFAULT_MODEL, help="model name (default %(default)s)")
    group.add_argument("--token", help="inference key (env DEEPFAKE_TOKEN)")
    group.add_argument("--management-token", help="management key (env DEEPFAKE_MANAGEMENT_TOKEN)")
    group.add_argument(
        "--key-file",
        type=Path,
        help="TorchServe key_file.json (env DEEPFAKE_KEY_FILE; default: ./runtime/key_file.json)",
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_READ_TIMEOUT,
        help="seconds to wait for an answer (read timeout; an answer still arriving after about twice this is "
        "given up) (default %(default)s)",
    )
    statuses = "/".join(map(str, sorted(RETRY_STATUSES)))
    group.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"retries of connection errors, HTTP {statuses} and 500 'Worker died', with capped exponential backoff "
        "(default %(default)s; a server that never answered is not retried)",
    )
    group.add_argument(
        "--retry-deadline",
        type=_positive,
        default=DEFAULT_RETRY_DEADLINE,
        help="no retry starts later than this many seconds after the first try (default %(default)s)",
    )
    group.add_argument(
        "--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT, help="concurrent requests (default %(default)s)"
    )
    group.add_argument("--json", action="store_true", help="machine-readable output")
    add_verbosity(group)
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar (it shows only on a terminal)")

    parser = argparse.ArgumentParser(
        prog="deepfake-detect",
        description="Real/Fake verdicts for images and videos from a deepfake-serve TorchServe deployment.",
        epilog="Exit codes: 0 ok, 2 bad input (or a model name that is not served), 3 authentication, "
        "4 server unavailable or too slow, 5 server error or an answer that does not fit the contract.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {client_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image", parents=[common], help="classify images")
    image.add_argument("images", nargs="+", help="image files")
    image.add_argument(
        "--explain",
        type=Path,
        metavar="OUT_DIR",
        help="also write each image's heatmap overlay (where the model sees manipulation) to OUT_DIR",
    )
    image.set_defaults(run=cmd_image)
    analysis = argparse.ArgumentParser(add_help=False)
    options = analysis.add_argument_group("video analysis")
    options.add_argument(
        "--fps",
        type=_positive,
        default=DEFAULT_FPS,
        help="frames sampled per second, at most the video's own rate (default %(default)s)",
    )
    options.add_argument(
        "--segment-threshold",
        type=_probability,
        default=DEFAULT_AGGREGATION.segment_threshold,
        help="fake probability at which a manipulated segment starts (default %(default)s)",
    )
    options.add_argument(
        "--segment-low",
        type=_probability,
        default=DEFAULT_AGGREGATION.segment_low,
        help="a manipulated segment goes on while frames stay at this fake probability or more (default %(default)s)",
    )
    options.add_argument(
        "--min-segment-seconds",
        type=float,
        default=DEFAULT_AGGREGATION.min_segment_seconds,
        help="the shortest manipulated segment that counts (default %(default)s)",
    )
    options.add_argument(
        "--fake-ratio-threshold",
        type=_probability,
        default=DEFAULT_AGGREGATION.fake_ratio_threshold,
        help="fake-frame ratio of the original app's ratio verdict (default %(default)s)",
    )
    options.add_argument(
        "--top-k", type=int, default=DEFAULT_AGGREGATION.top_k, help="frames in the top-k mean (default %(default)s)"
    )
    options.add_argument(
        "--frames-per-request",
        type=int,
        default=DEFAULT_FRAMES_PER_REQUEST,
        help="video frames packed into one Open Inference Protocol request (default %(default)s, measured fastest; "
        "1: one frame per request; face-crop archives always get 1)",
    )
    video = commands.add_parser("video", parents=[common, analysis], help="analyse a video at a fixed frame rate")
    video.add_argument("video", help=f"video file ({', '.join(VIDEO_FORMATS)})")
    video.add_argument(
        "--format", choices=["jpeg", "png"], default="jpeg", help="frame encoding on the wire (default %(default)s)"
    )
    video.add_argument("--plot", type=Path, help="write the fake-probability timeline to this PNG")
    video.add_argument(
        "--explain-top",
        nargs=2,
        action=_ExplainTop,
        metavar=("K", "OUT_DIR"),
        help="also write heatmap overlays of the K most fake frames to OUT_DIR",
    )
    video.set_defaults(run=cmd_video)
    scan_ = commands.add_parser(
        "scan",
        parents=[common, analysis],
        help="analyse a collection: files, folders and globs of images and videos",
        description="Every image and video under PATH (folders recursively, globs expanded, files recognised by "
        "content), many in flight at once; one JSON record per file, written as it is answered. Exit codes: 0 every "
        "file answered, 2 some files could not be analysed (listed), 3/4/5 the scan stopped (token, server).",
    )
    scan_.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or globs ('clips/**/*.mp4')")
    scan_.add_argument(
        "--out", type=Path, default=Path("scan.jsonl"), help="JSON Lines results, one per file (default %(default)s)"
    )
    scan_.add_argument("--csv", type=Path, help="also write a one-line-per-file CSV summary here")
    scan_.add_argument(
        "--resume", action="store_true", help="skip the files --out already records (same path, size and time)"
    )
    scan_.set_defaults(run=cmd_scan)
    models = commands.add_parser("models", parents=[common], help="list models with workers and settings")
    models.set_defaults(run=cmd_models)
    health = commands.add_parser("health", parents=[common], help="server health and worker readiness")
    health.set_defaults(run=cmd_health)
    scale = commands.add_parser("scale", parents=[common], help="set a model's worker count")
    scale.add_argument("workers", type=int, help="the number of workers the model should have (at least 1)")
    scale.add_argument("scale_model", nargs="?", metavar="MODEL", help="model (default: --model)")
    scale.set_defaults(run=cmd_scale)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    show_client_log(args.verbose, "deepfake-detect")
    urls = split_urls(*(args.url or []))
    try:
        config = ClientConfig.from_env(
            base_url=urls[0] if urls else None,
            replica_urls=tuple(urls[1:]) if urls else None,
            protocol=args.protocol,
            management_url=args.management_url,
            model=args.model,
            token=args.token,
            management_token=args.management_token,
            key_file=args.key_file,
            timeouts=Timeouts(read=args.timeout),
            retries=max(0, args.retries),
            retry_deadline=args.retry_deadline,
            max_in_flight=max(1, args.max_in_flight),
            frames_per_request=max(1, getattr(args, "frames_per_request", None) or DEFAULT_FRAMES_PER_REQUEST),
        )
        with DeepfakeClient(config) as client:
            return args.run(client, args)
    except DeepfakeError as exc:
        print(f"deepfake-detect: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("deepfake-detect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing left to say, and nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
