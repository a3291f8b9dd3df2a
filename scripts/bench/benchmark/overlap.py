"""Section 12: decoding the next batch while the current one runs.

A TorchServe worker is handed one batch at a time: it decodes the batch, runs the model, answers, and
only then gets the next one, so within one worker decode and inference never overlap. Two workers of
one thread each do overlap them (one decodes while the other infers) at the price of a second model in
memory and half the cores per batch. Measured side by side on one archive: the default (one worker of
every core) against two workers of one thread each, with 16 clients of one frame per request, a lone
request, and the clip at the client's default frames per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.bench.benchmark.harness import (
    ADOPT_GAIN,
    CONCURRENCY,
    MODEL_NAME,
    load,
    serving,
    with_model_config,
    worker_rss_mb,
    write_video,
)
from scripts.bench.benchmark.video import video_ours
from scripts.operations.archives import DEFAULT_WORKERS
from scripts.operations.precision import DEFAULT_PRECISION

LAYOUTS = {"1": "one worker of every core (the default)", "2": "two workers of one thread each"}


def overlap(archive: Path, payloads: list[bytes], workdir: Path, total: int, seconds: float) -> dict[str, Any]:
    """The crowd, a lone request and the clip, on one worker and on two."""
    clip = write_video(workdir / "overlap_clip.mp4", seconds)
    rows = {}
    for workers in LAYOUTS:
        count = int(workers)
        path = with_model_config(
            archive, workdir / f"mar_workers{count}" / f"{MODEL_NAME}.mar", minWorkers=count, maxWorkers=count
        )
        with serving(path, workdir / f"ts_workers{count}") as (ts, _):
            video_ours(ts, clip, workdir)  # warm-up
            rows[workers] = {
                "crowd": load(ts, payloads, CONCURRENCY, total),
                "lone": load(ts, payloads, 1, total // 3),
                "video": video_ours(ts, clip, workdir),
                "worker_rss_mb": worker_rss_mb(ts),
            }
    return {"seconds": seconds, "default_workers": DEFAULT_WORKERS, "rows": rows}


def overlap_markdown(o: dict[str, Any]) -> str:
    rows = o["rows"]
    lines = [
        f"## 12. Decode beside inference: one worker or two ({DEFAULT_PRECISION})",
        "",
        f"| workers | {CONCURRENCY} concurrent clients, images/s | lone p50 ms | {o['seconds']:g} s 720p clip | "
        "RSS MB (all workers) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {LAYOUTS[k]} | {r['crowd']['images_per_s']:.1f} | {r['lone']['p50_ms']:.0f} | "
        f"{r['video']['end_to_end_s']:.2f} s | {r['worker_rss_mb']:.0f} |"
        for k, r in rows.items()
    ]
    one, two = rows["1"], rows["2"]
    gain = two["crowd"]["images_per_s"] / one["crowd"]["images_per_s"]
    adopted = gain >= ADOPT_GAIN and two["video"]["end_to_end_s"] <= one["video"]["end_to_end_s"]
    lines += [
        "",
        f"Two workers / one = {gain:.2f}x the crowd rate, the clip {two['video']['end_to_end_s']:.2f} s against "
        f"{one['video']['end_to_end_s']:.2f} s, a lone request {two['lone']['p50_ms']:.0f} ms against "
        f"{one['lone']['p50_ms']:.0f} ms: "
        + (
            f"two workers serve more for their memory (a gain of {ADOPT_GAIN - 1:.0%} or more with the clip no "
            f"slower): `WORKERS=2` where a crowd's rate matters more than memory and a lone request's latency, which "
            f"keep the default at {o['default_workers']} worker."
            if adopted
            else f"not adopted: the default stays {o['default_workers']} worker (a gain of {ADOPT_GAIN - 1:.0%} or "
            "more with the clip no slower would be)."
        ),
    ]
    return "\n".join(lines)
