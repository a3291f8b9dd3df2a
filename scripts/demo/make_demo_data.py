"""Generate the synthetic demo data set: Real/Fake images and videos with a known manipulation.

    python -m scripts.demo.make_demo_data --out artifacts/demo/data

No real face data can be downloaded here, so the demo model learns what this script plants:
"real" images are procedural outdoor scenes with camera-like grain; "fake" ones are the same kind
of scene with its subject's elliptical region re-synthesised the way generators leave traces (content
up-sampled from a coarse grid, a transposed-convolution checkerboard, a colour/noise mismatch
with its surroundings, a blending seam). Every trace is defined on the 224x224 grid the model
sees, so it survives the resize of a 720p frame. Output:

    images/{train,val,test}/{real,fake}/*.jpg   disjoint splits for training, calibration, testing
    masks/{train,val,test}/fake_*.png           each fake image's manipulated region (white), for explanations
    videos/{real,fake}/*.mp4                    short labelled clips for video-level evaluation
    spans/{tune,test}/*.mp4, spans.json         partly manipulated and clean clips, with the manipulated spans
    demo.mp4                                    ~15 s, 720p, middle segment manipulated
    samples/{real,fake}.jpg                     one held-out image of each class
    manifest.json                               counts, seeds and the demo video's manipulated range
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from scripts.synthetic.scenes import make_image_and_mask, write_clip


def _save_image(job: tuple[list[int], bool, Path, Path | None]) -> None:
    seed, fake, path, mask_path = job
    image, mask = make_image_and_mask(seed, fake)
    image.save(path, quality=92)
    if mask is not None and mask_path is not None:
        mask.save(mask_path)


SPAN_CLIP_SECONDS = 8.0
SPAN_VIDEOS = 8  # partly manipulated (and as many clean) clips per span set
DEFAULT_SEED = 2024


def write_span_videos(out: Path, count: int, seed: int, seconds: float = SPAN_CLIP_SECONDS) -> None:
    """Clips for the video verdict, in two sets that never share a seed (``tune`` to choose the rule's constants,
    ``test`` to report it): in each, ``count`` partly manipulated clips (a span of 0.5 s up to the whole clip, at a
    random place) and ``count`` clean ones, with spans.json (clip name -> manipulated [start, end] s, or null)."""
    for split_index, split in enumerate(("tune", "test")):
        folder = out / "spans" / split
        folder.mkdir(parents=True, exist_ok=True)
        spans: dict[str, list[float] | None] = {}
        for i in range(count):
            rng = np.random.default_rng([seed, 20, split_index, i])
            length = float(rng.uniform(0.5, seconds))
            start = float(rng.uniform(0.0, seconds - length))
            span = (round(start, 2), round(start + length, 2))
            write_clip(folder / f"partial_{i:02d}.mp4", rng, seconds, (640, 360), 15, span)
            spans[f"partial_{i:02d}.mp4"] = list(span)
            clean = np.random.default_rng([seed, 21, split_index, i])
            write_clip(folder / f"clean_{i:02d}.mp4", clean, seconds, (640, 360), 15, None)
            spans[f"clean_{i:02d}.mp4"] = None
        (folder / "spans.json").write_text(json.dumps(spans, indent=2))  # last: its presence means complete
    print(f"span videos: {count} partly manipulated and {count} clean per set (tune, test)", flush=True)


# --- command line -------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("artifacts/demo/data"))
    parser.add_argument("--train", type=int, default=600, help="training images per class")
    parser.add_argument("--val", type=int, default=100, help="validation (calibration) images per class")
    parser.add_argument("--test", type=int, default=200, help="held-out test images per class")
    parser.add_argument("--videos", type=int, default=4, help="labelled short clips per class")
    parser.add_argument(
        "--span-videos", type=int, default=SPAN_VIDEOS, help="partly manipulated (and as many clean) clips per span set"
    )
    parser.add_argument("--demo-seconds", type=float, default=15.0)
    parser.add_argument("--demo-fake-start", type=float, default=5.0)
    parser.add_argument("--demo-fake-end", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--samples-only", action="store_true", help="only samples/ and demo.mp4 (no training data)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for image generation")
    return parser


TEST_SPLIT = 2  # seed component of the test split: samples/ are its first images


def write_image_sets(out: Path, splits: dict[str, int], seed: int, workers: int) -> None:
    jobs = []
    for offset, (split, count) in enumerate(splits.items()):
        masks = out / "masks" / split
        masks.mkdir(parents=True, exist_ok=True)
        for label_index, label in enumerate(("real", "fake")):
            folder = out / "images" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            # one seed per image: splits never share a stream, and order does not matter
            jobs += [
                (
                    [seed, offset, label_index, i],
                    label == "fake",
                    folder / f"{label}_{i:05d}.jpg",
                    masks / f"{label}_{i:05d}.png" if label == "fake" else None,
                )
                for i in range(count)
            ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(_save_image, jobs, chunksize=16), start=1):
            if done % 400 == 0 or done == len(jobs):
                print(f"images: {done}/{len(jobs)}", flush=True)


def write_samples_and_demo_video(out: Path, args: argparse.Namespace) -> tuple[float, float]:
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for label_index, label in enumerate(("real", "fake")):  # = images/test/<label>/<label>_00000.jpg
        sample = out / "samples" / f"{label}.jpg"
        _save_image(([args.seed, TEST_SPLIT, label_index, 0], label == "fake", sample, None))
    fake_range = (args.demo_fake_start, args.demo_fake_end)
    write_clip(out / "demo.mp4", np.random.default_rng([args.seed, 99]), args.demo_seconds, (1280, 720), 25, fake_range)
    print(f"demo video: {out / 'demo.mp4'} (manipulated {fake_range[0]:g}-{fake_range[1]:g} s)", flush=True)
    return fake_range


def main(argv: list[str] | None = None) -> int:
    return run(get_args_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """What the command line does, from its options (``scripts.options`` builds them for a caller)."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.samples_only:  # `make run WEIGHTS=...`: something to classify, no training data
        if not (out / "demo.mp4").exists():
            write_samples_and_demo_video(out, args)
        return 0
    splits = {"train": args.train, "val": args.val, "test": args.test}
    write_image_sets(out, splits, args.seed, args.workers)
    for label_index, label in enumerate(("real", "fake")):
        folder = out / "videos" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.videos):
            rng = np.random.default_rng([args.seed, 10, label_index, i])
            fake_range = (0.0, 4.0) if label == "fake" else None
            write_clip(folder / f"{label}_{i:02d}.mp4", rng, 4.0, (640, 360), 15, fake_range)
    print(f"videos: {args.videos} per class", flush=True)
    write_span_videos(out, args.span_videos, args.seed)
    fake_range = write_samples_and_demo_video(out, args)
    manifest = {  # written last: its presence means the data set is complete (build_demo's cache)
        "seed": args.seed,
        "images": {split: {"real": n, "fake": n} for split, n in splits.items()},
        "videos_per_class": args.videos,
        "demo_video": {
            "path": "demo.mp4",
            "seconds": args.demo_seconds,
            "size": [1280, 720],
            "fps": 25,
            "manipulated": {"start": fake_range[0], "end": fake_range[1]},
        },
        "labels": ["Real", "Fake"],
        "masks": "masks/<split>/fake_<n>.png: each fake image's re-synthesised region (white)",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
