"""Section 11: OpenVINO's performance hints in-process, side by side: LATENCY (what the worker compiles:
one request using every core) against THROUGHPUT (two streams, a batch split over two requests in
flight), for the archive's own IR, on one batch size the server runs (8)."""

from __future__ import annotations

import statistics
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from handler.runtimes import INFERENCE_PRECISION_HINT, IR_FILES, openvino_core
from scripts.bench.benchmark.harness import ADOPT_GAIN
from scripts.operations.precision import DEFAULT_PRECISION

BATCH = 8
ROUNDS = 3  # each hint measured this many times, alternating, the median kept


def _rate(run: Any, batches: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * BATCH / (time.perf_counter() - started)


def hints(archive: Path, workdir: Path, batches: int) -> dict[str, Any]:
    """images/s of the archive's IR compiled with each hint, one batch of 8 at a time."""
    unpacked = workdir / "hints"
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(unpacked)
    core = openvino_core()
    model = core.read_model(str(unpacked / IR_FILES[DEFAULT_PRECISION]))
    precision = INFERENCE_PRECISION_HINT[DEFAULT_PRECISION]
    batch = np.random.default_rng(0).random((BATCH, 3, 224, 224), dtype=np.float32)
    latency = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request = latency.create_infer_request()
    throughput = core.compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}
    )
    pair = [throughput.create_infer_request() for _ in range(2)]
    halves = [batch[: BATCH // 2], batch[BATCH // 2 :]]

    def one_request() -> None:
        request.infer({0: batch})

    def two_in_flight() -> None:
        for infer, half in zip(pair, halves, strict=True):
            infer.start_async({0: half})
        for infer in pair:
            infer.wait()

    for run in (one_request, two_in_flight):  # warm-up
        _rate(run, 2)
    rates: dict[str, list[float]] = {"LATENCY": [], "THROUGHPUT": []}
    for _ in range(ROUNDS):
        rates["LATENCY"].append(_rate(one_request, batches))
        rates["THROUGHPUT"].append(_rate(two_in_flight, batches))
    return {
        "precision": DEFAULT_PRECISION,
        "batch": BATCH,
        "streams": int(throughput.get_property("NUM_STREAMS")),
        "images_per_s": {hint: statistics.median(values) for hint, values in rates.items()},
        "rounds": rates,
    }


def hints_markdown(h: dict[str, Any]) -> str:
    rates = h["images_per_s"]
    ratio = rates["THROUGHPUT"] / rates["LATENCY"]
    verdict = "adopted" if ratio >= ADOPT_GAIN else "not adopted: the worker keeps LATENCY"
    return "\n".join(
        [
            f"## 11. OpenVINO performance hints, in-process ({h['precision']}, batch {h['batch']})",
            "",
            "| hint | images/s (median of the rounds) |",
            "| --- | --- |",
            f"| LATENCY: one request, every core (the worker's) | {rates['LATENCY']:.1f} |",
            f"| THROUGHPUT: {h['streams']} streams, the batch split over 2 requests in flight | "
            f"{rates['THROUGHPUT']:.1f} |",
            "",
            f"THROUGHPUT / LATENCY = {ratio:.2f}x: {verdict} (a gain of {ADOPT_GAIN - 1:.0%} or more would be).",
        ]
    )
