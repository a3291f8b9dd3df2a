"""Section 10: several video frames per request (1, 4, 8): the 60 s clip and the crowd rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepfake_contract import OIP
from scripts.bench.benchmark.harness import CONCURRENCY, load, write_video
from scripts.bench.benchmark.video import video_ours
from scripts.operations.precision import DEFAULT_PRECISION
from scripts.operations.torchserve import TorchServe

PACKINGS = (1, 4, 8)


def packing(ts: TorchServe, payloads: list[bytes], workdir: Path, total: int, seconds: float) -> dict[str, Any]:
    """The 60 s clip with ``deepfake-detect video --frames-per-request`` 1, 4 and 8, and 16 clients
    sending OIP requests of as many frames, side by side on one running server."""
    clip = write_video(workdir / "pack_clip.mp4", seconds)
    video_ours(ts, clip, workdir)  # warm-up: the clip's path
    rows = {}
    for per_request in PACKINGS:
        rows[str(per_request)] = {
            "video": video_ours(ts, clip, workdir, per_request),
            "crowd": load(ts, payloads, CONCURRENCY, max(CONCURRENCY * 2, total // per_request), OIP, per_request),
        }
    return {"seconds": seconds, "rows": rows}


def packing_markdown(p: dict[str, Any]) -> str:
    rows = p["rows"]
    lines = [
        f"## 10. Packed frames: several video frames per request ({DEFAULT_PRECISION})",
        "",
        f"| frames per request | {p['seconds']:g} s 720p clip end to end | 16 concurrent clients, images/s | "
        "p50 ms per request |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {k} | {r['video']['end_to_end_s']:.2f} s | {r['crowd']['images_per_s']:.1f} | {r['crowd']['p50_ms']:.0f} |"
        for k, r in rows.items()
    ]
    return "\n".join(lines)
