"""Section 9: scan throughput beside the crowd, and what explanations cost the predictions beside them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests

from deepfake_client import encode_frame
from scripts.bench.benchmark.harness import (
    CONCURRENCY,
    MODEL_NAME,
    TARGETS,
    load,
    merged_rounds,
    percentile,
    worker_rss_mb,
)
from scripts.operations.precision import DEFAULT_PRECISION
from scripts.operations.torchserve import TorchServe

SCAN_IMAGES = 500
SCAN_ROUNDS = 3  # the crowd and a scan pass in turn, so that a moment of this VM's drift hits both alike


def scan_folder(folder: Path, count: int) -> Path:
    """``count`` distinct 224x224 JPEGs (demo-style scenes, real and fake alternating) in ``folder``."""
    from scripts.synthetic.scenes import make_image

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


def analysts(ts: TorchServe, payloads: list[bytes], workdir: Path, total: int, scan_images: int) -> dict[str, Any]:
    """Side by side on one running server: the crowd of 16 clients, ``deepfake-detect scan`` over a folder
    of distinct images, and predictions before, beside and after explanations."""
    from deepfake_client import DeepfakeClient, scan

    folder = scan_folder(workdir / "scan_images", scan_images)
    crowds, passes = [], []
    with DeepfakeClient(ts.client_config()) as client:
        scan(client, [folder], workdir / "warm.jsonl")  # warm-up: connections, caches
        for index in range(SCAN_ROUNDS):  # the crowd and the scan in turn: this VM's drift weighs on both
            crowds.append(load(ts, payloads, CONCURRENCY, total // SCAN_ROUNDS, warm_up=index == 0))
            started = time.perf_counter()
            tally = scan(client, [folder], workdir / f"scan{index}.jsonl")
            passes.append((tally.scanned, time.perf_counter() - started, tally.scanned - len(tally.failures)))
    crowd = merged_rounds(crowds)
    lone = load(ts, payloads, 1, total // 3)
    rss_before = worker_rss_mb(ts)
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
            "seconds": sum(seconds for _, seconds, _ in passes),
            "images_per_s": sum(scanned for scanned, _, _ in passes) / sum(seconds for _, seconds, _ in passes),
            "answered": min(answered for _, _, answered in passes),  # the worst pass's
            "rounds": [scanned / seconds for scanned, seconds, _ in passes],
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


def scan_round_ratios(a: dict[str, Any]) -> list[float]:
    """Each scan pass's images/s over the crowd round measured just before it (none for a run from before the
    two were measured in turn)."""
    return [scan / crowd for scan, crowd in zip(a["scan"].get("rounds", []), a["crowd"].get("rounds", []), strict=True)]


def scan_rounds_text(a: dict[str, Any]) -> str:
    ratios = scan_round_ratios(a)
    if not ratios:
        return ""
    return (
        f" ({len(ratios)} rounds of the crowd and a scan pass in turn, the figures over all of them: "
        f"{min(ratios):.2f}x-{max(ratios):.2f}x round by round)"
    )


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
            f"{a['scan']['answered']}/{a['scan']['images']} answered{scan_rounds_text(a)}.",
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
