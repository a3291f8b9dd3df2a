"""The run: every section in order, or some alone (``--only``), then the report.

Benchmark the deployment on this machine, side by side in one run, and write a report with targets.

    python -m scripts.bench.benchmark --report docs/benchmark.md          # make benchmark
    python -m scripts.bench.benchmark --quick --report /tmp/quick.md      # smoke run (a test executes it)

Every server is a real TorchServe on free loopback ports, started from an archive built here, one
measured at a time: the default mode's, started for section 2, is kept running (idle meanwhile) for
sections 5, 9, 10 and 13 (harness.Servers); the others are stopped when their section ends. The model
is a ResNet50 trained on the demo data by this script (cached in artifacts/bench; the weights matter
for the agreement figures, not for speed). Measured:

1. the in-process ceiling per mode: a tight loop over batches of 8 in a fresh process (torch eager
   fp32 and bf16 autocast beside the OpenVINO modes, which is why OpenVINO runs every mode);
2. each mode served, with 16 concurrent clients sending distinct 224x224 JPEG frames, and a lone
   request, once the server is a running one (``RUNNING_SERVICE_WARM_UP`` requests answered first); the
   crowd measured in ``SERVED_ROUNDS`` rounds, each after the mode's in-process ceiling again (the
   served/in-process targets: this VM's drift weighs on both alike); the decode and inference time per
   batch the worker logs;
3. TorchServe's stock ``ImageClassifier`` (a ``topk = 2`` subclass) on the same weights, inputs and
   batch settings;
4. the original app's path: one image at a time, torch fp32, in-process;
5. a 60 s 720p30 H.264 clip analysed at 2 fps by ``deepfake-detect`` end to end, against the original
   app's path (frames extracted to JPEG files, then classified one by one);
6. cold start: TorchServe start to worker READY per mode;
7. agreement of every mode with fp32 on held-out demo images, for the demo ResNet18 and the ResNet50;
8. face-crop mode beside full mode, and its detector beside facenet-pytorch's own path (faces.py);
9. analysts: scan and explanations; 10. frames per request; 11. OpenVINO's hints; 12. one worker or two;
13. gRPC against HTTP to TorchServe's frontend; 14. the GPU, where this machine has one (gpu.py); 15. the
frontend's JIT compiler from a fresh start, config.properties' ``vmargs`` against the JVM's defaults; plus
maxBatchDelay for the default mode. ``--quick`` runs every section on a random ResNet18 with small counts
(numbers meaningless, code paths exercised).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepfake_contract import OIP
from handler.checkpoint import load_model
from handler.runtimes import cpu_capabilities
from handler.settings import PRECISIONS
from scripts.bench.benchmark.analysts import SCAN_IMAGES, analysts, analysts_markdown
from scripts.bench.benchmark.faces import face_mode, faces_markdown
from scripts.bench.benchmark.gpu import gpu, gpu_markdown
from scripts.bench.benchmark.grpc_wire import grpc_markdown, grpc_vs_http
from scripts.bench.benchmark.harness import (
    CONCURRENCY,
    DEMO_R18,
    MODEL_NAME,
    Servers,
    Subject,
    cpu_description,
    demo_settings,
    ensure_demo,
    ensure_resnet50,
    frame_payloads,
    in_fresh_process,
    load,
    merged_ceilings,
    merged_rounds,
    quick_subject,
    random_resnet50,
    running_service_warm_up,
    served_runtime,
    serving,
    test_images,
    with_model_config,
    worker_rss_mb,
    write_video,
)
from scripts.bench.benchmark.hints import hints, hints_markdown
from scripts.bench.benchmark.inprocess import _ceiling, _jpeg_draft, _original_app
from scripts.bench.benchmark.jit import frontend_jit, jit_markdown
from scripts.bench.benchmark.overlap import overlap, overlap_markdown
from scripts.bench.benchmark.packing import packing, packing_markdown
from scripts.bench.benchmark.report import checks, markdown, update_readme
from scripts.bench.benchmark.stock import stock_archive
from scripts.bench.benchmark.video import video_original, video_ours
from scripts.operations.archives import (
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_WORKERS,
    build_archive,
)
from scripts.operations.precision import DEFAULT_PRECISION, build_runtime


def _counts(args: argparse.Namespace) -> tuple[int, float]:
    """Requests per load level and the clip's seconds (main makes the clip short in a smoke run)."""
    return 48 if args.quick else args.requests, args.video_seconds


# The sections measured on the default mode's archive, in the full run's order (and alone: ``--only NAME``),
# each given (args, subject, archive, payloads, workdir, the run's Servers: the archive's running server)
Section = Callable[[argparse.Namespace, Subject, Path, list[bytes], Path, Servers], dict[str, Any]]
ON_DEFAULT_ARCHIVE: dict[str, Section] = {
    "packing": lambda args, _s, path, payloads, work, servers: packing(
        servers.running(path, work)[0], payloads, work, *_counts(args)
    ),
    "hints": lambda args, _s, path, _p, work, _servers: hints(path, work, 4 if args.quick else 40),
    "overlap": lambda args, _s, path, payloads, work, _servers: overlap(path, payloads, work, *_counts(args)),
    "grpc": lambda args, _s, path, payloads, work, servers: grpc_vs_http(
        servers.running(path, work)[0], payloads, work, *_counts(args)
    ),
    "jit": lambda args, _s, path, payloads, work, _servers: frontend_jit(
        path, payloads, work, 2 if args.quick else JIT_ROUNDS, 48 if args.quick else JIT_PER_ROUND
    ),
    "faces": lambda args, subject, path, _p, work, _servers: face_mode(
        subject, path, work, args.video_seconds, 48 if args.quick else 160, args.quick
    ),
    "analysts": lambda args, _s, path, payloads, work, servers: analysts(
        servers.running(path, work)[0], payloads, work, _counts(args)[0], 48 if args.quick else SCAN_IMAGES
    ),
    # builds its own archives (no OpenVINO IR: a GPU worker runs the checkpoint), so it runs where OpenVINO does not
    "gpu": lambda args, subject, _path, payloads, work, _servers: gpu(
        subject, payloads, work, _counts(args)[0], args.quick
    ),
}
NEEDS_NO_DEFAULT_ARCHIVE = {"gpu"}
# Sections 2-4: a mode's crowd in rounds, each after its in-process ceiling again. Measured minutes apart (section 1,
# then 2), one run's bf16 ratio came out 91% and the next run's 85%: this VM's speed drifts within minutes.
SERVED_ROUNDS = 3
QUICK_SERVED_ROUNDS = 2  # the smoke run: still rounds, each a fresh interpreter fewer
# Section 15: the JVM's default tiers settled within ~7000 requests of a start here, so 12 rounds of 800
JIT_ROUNDS, JIT_PER_ROUND = 12, 800


TITLES = {
    "packing": "10. frames per request",
    "hints": "11. OpenVINO hints",
    "overlap": "12. one worker or two",
    "grpc": "13. gRPC or HTTP",
    "jit": "15. the frontend's JIT",
    "faces": "8. face-crop mode",
    "analysts": "9. scan and explanations",
    "gpu": "14. the GPU",
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torchserve": importlib.metadata.version("torchserve"),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": cpu_description(),
            "openvino_capabilities": sorted(cpu_capabilities()),
        },
        "quick": quick,
        "workers": DEFAULT_WORKERS,  # full mode's worker count per archive (face mode's: section 8)
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, Servers() as servers:
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
        requests_total = _counts(args)[0]
        warm_up = running_service_warm_up(quick)
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

        # 2 + 6. served per mode: crowd, lone request, cold start, worker memory; each a running service
        results["served"], results["served_warm_up"] = {}, warm_up
        rounds = QUICK_SERVED_ROUNDS if quick else SERVED_ROUNDS
        for mode in PRECISIONS:
            print(f"[bench] served {mode}", flush=True)
            with contextlib.ExitStack() as own:  # the default mode's server is kept for sections 5, 9, 10 and 13
                if mode == DEFAULT_PRECISION:
                    ts, cold_start = servers.running(archives[mode][0], workdir / f"ts_{mode}")
                else:
                    ts, cold_start = own.enter_context(serving(archives[mode][0], workdir / f"ts_{mode}"))
                load(ts, payloads, CONCURRENCY, warm_up)
                crowds, ceilings = [], []
                for _ in range(rounds):  # in-process (the server idle meanwhile) and served, in turn
                    ceilings.append(in_fresh_process(_ceiling, "archive", str(archives[mode][0]), 8, iterations))
                    crowds.append(load(ts, payloads, CONCURRENCY, requests_total // rounds, warm_up=False))
                results["served"][mode] = {
                    "cold_start_s": cold_start,
                    "crowd": merged_rounds(crowds),
                    "ceiling_in_turn": merged_ceilings(ceilings),
                    "lone": load(ts, payloads, 1, requests_total // 3),
                    "worker_rss_mb": worker_rss_mb(ts),
                    "runtime": served_runtime(ts),
                }
                if mode == DEFAULT_PRECISION:  # the same frames over the Open Inference Protocol
                    results["served"][mode]["crowd_oip"] = load(ts, payloads, CONCURRENCY, requests_total, OIP)

        # 3. the stock handler, same weights, inputs and batch settings
        print("[bench] stock ImageClassifier", flush=True)
        stock = stock_archive(subject, workdir / "mar_stock", DEFAULT_MAX_BATCH_DELAY_MS)
        with serving(stock, workdir / "ts_stock") as (ts, cold_start):
            load(ts, payloads, CONCURRENCY, warm_up)
            results["stock"] = {
                "cold_start_s": cold_start,
                "crowd": load(ts, payloads, CONCURRENCY, requests_total),
                "lone": load(ts, payloads, 1, requests_total // 3),
                "worker_rss_mb": worker_rss_mb(ts),
            }

        # 5. video end to end, default mode, against the original app's path
        print("[bench] video", flush=True)
        clip = write_video(workdir / "clip.mp4", args.video_seconds)
        ts = servers.running(archives[DEFAULT_PRECISION][0], workdir / "ts_video")[0]
        video_ours(ts, clip, workdir)  # warm-up: the clip's path, as in sections 10-13
        results["video"] = {"seconds": args.video_seconds, "ours": video_ours(ts, clip, workdir, halves=True)}
        results["video"]["original"] = video_original(subject, clip, workdir)

        # 10-13, 15, 8, 9: sections on the default mode's archive
        for name, measure in ON_DEFAULT_ARCHIVE.items():
            print(f"[bench] {TITLES[name]}", flush=True)
            (workdir / name).mkdir()
            results[name] = {
                "model": subject.arch,
                **measure(args, subject, archives[DEFAULT_PRECISION][0], payloads, workdir / name, servers),
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


def sections_alone(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Sections measured alone (``--only NAME ...``), one after another on one archive, and merged into the
    report's JSON: on the trained ResNet50 when ``make benchmark`` cached it, else a randomly initialised
    one (speed does not depend on the weights)."""
    previous = args.report.with_suffix(".json")
    results = json.loads(previous.read_text()) if previous.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, Servers() as servers:
        workdir = Path(tmp)
        subject = quick_subject(workdir) if args.quick else random_resnet50(workdir)
        path = workdir / "mar" / f"{MODEL_NAME}.mar"  # built once, only for the sections that use it
        if set(names) - NEEDS_NO_DEFAULT_ARCHIVE:
            build_archive(subject.weights, subject.settings, MODEL_NAME, path.parent, precision=DEFAULT_PRECISION)
        payloads = frame_payloads(16 if args.quick else 64, quick=args.quick or not DEMO_R18.exists())
        for name in dict.fromkeys(names):  # each once, in the order asked
            print(f"[bench] {name} alone", flush=True)
            (workdir / name).mkdir()
            measure = ON_DEFAULT_ARCHIVE[name]
            measured = measure(args, subject, path, payloads, workdir / name, servers)
            results[name] = {
                "model": subject.arch,
                "measured_alone": time.strftime("%Y-%m-%d"),
                "measured_on": cpu_description(),  # the run's CPU may have been another: the report says so
                **measured,
            }
    return results


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per load level")
    parser.add_argument("--video-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: random ResNet18, small counts")
    parser.add_argument("--report", type=Path, default=Path("docs/benchmark.md"))
    parser.add_argument(
        "--readme", type=Path, help="rewrite this README's generated benchmark block from a full run (make benchmark)"
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only write the report again from this run's JSON (no measuring)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(ON_DEFAULT_ARCHIVE),
        metavar="NAME",
        help="measure these sections alone, on one archive, and merge them into the report's JSON (analysts: "
        "scan, explanations; packing: frames per request; hints: OpenVINO's LATENCY against THROUGHPUT "
        "in-process; faces: face-crop mode and its detector; overlap: one worker against two; grpc: gRPC "
        "against HTTP; jit: the frontend's JIT from a fresh start; gpu: the GPU in-process and served, where CUDA is)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.quick and args.video_seconds == get_args_parser().get_default("video_seconds"):
        args.video_seconds = 4.0
    if args.render:
        results = json.loads(args.render.read_text())
    elif args.only:
        results = sections_alone(args, args.only)
    else:
        results = run(args)
    if "served" in results:
        report = markdown(results)
    else:  # a section measured alone, into a report without the full run
        parts = [analysts_markdown(results["analysts"])] if "analysts" in results else []
        parts += [packing_markdown(results["packing"])] if "packing" in results else []
        parts += [hints_markdown(results["hints"])] if "hints" in results else []
        parts += [faces_markdown(results["faces"], args.video_seconds)] if "faces" in results else []
        parts += [overlap_markdown(results["overlap"])] if "overlap" in results else []
        parts += [grpc_markdown(results["grpc"])] if "grpc" in results else []
        parts += [gpu_markdown(results["gpu"])] if "gpu" in results else []
        parts += [jit_markdown(results["jit"])] if "jit" in results else []
        report = "\n\n".join(parts) + "\n"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    args.report.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(report)
    if "served" not in results:
        return 0
    if args.readme is not None and not results.get("quick"):
        update_readme(args.readme, results)
    return 0 if args.quick or all(ok is not False for _, ok, _ in checks(results)) else 1
