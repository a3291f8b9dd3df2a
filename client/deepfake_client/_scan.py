"""Scan a collection: files, folders and globs of images and videos, each answered, streamed to JSON Lines.

Files are recognised by content, not by name. Many files are in flight together (images one request
each, videos a window of frames each), so TorchServe's batches stay full. One record per file is
written as soon as it is answered; ``resume`` skips the files a previous scan recorded (same path,
size and modification time). A file that cannot be analysed is recorded with its error and never
stops the scan; an unreachable server or a refused token does (what was recorded stays).
"""

from __future__ import annotations

import csv
import glob
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake_client._aggregate import AggregationConfig
from deepfake_client._client import DeepfakeClient
from deepfake_client._config import DEFAULT_FPS
from deepfake_client._exceptions import InputError, InputRejectedError
from deepfake_client._media import sniff_file
from deepfake_client._results import json_safe
from deepfake_contract import is_no_face

VIDEOS_IN_FLIGHT = 2  # videos analysed at once: each keeps the client's window of frames in flight
GLOB_CHARACTERS = set("*?[")
NO_FACE = "no face"
CSV_FIELDS = ("path", "kind", "verdict", "fake_probability", "reason", "error")


def collect(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every file named: files as given, folders recursively (sorted), globs expanded (``**`` recursive)."""
    seen: set[Path] = set()
    for given in paths:
        text = str(given)
        if GLOB_CHARACTERS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        elif Path(text).is_dir():
            matches = sorted(p for p in Path(text).rglob("*") if p.is_file())
        else:
            matches = [Path(text)]
        for path in matches:
            if path.is_dir():
                continue
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                yield path


@dataclass(frozen=True)
class FileKey:
    """What identifies a scanned file for --resume: its path, size and modification time."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def recorded_keys(jsonl: Path) -> set[FileKey]:
    """The files a previous scan answered in ``jsonl`` (failed ones are tried again; a torn last line, from an
    interruption, is ignored)."""
    keys: set[FileKey] = set()
    if not jsonl.is_file():
        return keys
    for line in jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
            if not record.get("error"):
                keys.add(FileKey(record["resolved"], int(record["size"]), int(record["mtime_ns"])))
        except (ValueError, KeyError, TypeError):
            continue
    return keys


@dataclass
class ScanTally:
    """What a scan did: counts per verdict, the failures with their reasons, the files skipped."""

    verdicts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    frames: int = 0

    @property
    def scanned(self) -> int:
        return sum(self.verdicts.values()) + len(self.failures)


def analyse_file(
    client: DeepfakeClient,
    path: Path,
    kind: str | None,
    fps: float,
    aggregation: AggregationConfig,
    on_frames: Callable[[int], None],
) -> dict[str, Any]:
    """One file's record: its kind and answer, or the error it alone ran into."""
    key = FileKey.of(path)
    record: dict[str, Any] = {"path": str(path), "resolved": key.path, "size": key.size, "mtime_ns": key.mtime_ns,
                              "kind": kind}  # fmt: skip
    if kind is None:
        return {**record, "error": f"{path}: neither an image nor a video this client reads"}
    if kind == "image":
        try:
            p = client.predict_image(path)
        except InputRejectedError as exc:
            if is_no_face(exc.status, exc.error_type):
                return {**record, "verdict": NO_FACE, "reason": str(exc)}
            return {**record, "error": str(exc)}
        except InputError as exc:
            return {**record, "error": str(exc)}
        on_frames(1)
        return {**record, "verdict": p.label, "fake_probability": p.fake_probability, "answer": p.to_json()}
    done = [0]

    def progress(count: int) -> None:
        on_frames(count - done[0])
        done[0] = count

    try:
        analysis = client.analyze_video(path, fps, aggregation=aggregation, progress=progress)
    except InputError as exc:
        return {**record, "error": str(exc)}
    s = analysis.summary
    return {
        **record,
        "verdict": s.verdict,
        "reason": s.reason,
        "fake_probability": s.top_k_mean,
        "scores": {
            "mean": s.mean_fake_probability,
            "top_k_mean": s.top_k_mean,
            "ratio": s.fake_frame_ratio,
            "ratio_verdict": s.ratio_verdict,
            "confident": s.confident_score,
        },
        "segments": [segment.to_dict() for segment in analysis.segments],
        "timeline": [{"time": f.time, "fake_probability": f.to_dict()["fake_probability"]} for f in analysis.frames],
        "fps": analysis.fps,
        "notes": analysis.notes,
        "tracks": [{k: v for k, v in t.to_dict().items() if k != "points"} for t in analysis.tracks],
    }


def scan(
    client: DeepfakeClient,
    paths: Iterable[str | Path],
    out: Path,
    *,
    resume: bool = False,
    fps: float = DEFAULT_FPS,
    aggregation: AggregationConfig | None = None,
    on_file: Callable[[dict[str, Any]], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> ScanTally:
    """Scan every file of ``paths`` into the JSON Lines file ``out`` (appended when ``resume``)."""
    aggregation = aggregation or AggregationConfig()
    done = recorded_keys(out) if resume else set()
    tally = ScanTally()
    lock = threading.Lock()
    videos = threading.Semaphore(VIDEOS_IN_FLIGHT)

    def count_frames(number: int) -> None:
        with lock:
            tally.frames += number
        if on_frames:
            on_frames(number)

    def one(path: Path) -> dict[str, Any]:
        try:
            kind = sniff_file(path)
        except OSError as exc:
            return {**_unread(path), "error": f"{path}: cannot read ({exc.strerror})"}
        if kind == "video":
            with videos:
                return analyse_file(client, path, kind, fps, aggregation, count_frames)
        return analyse_file(client, path, kind, fps, aggregation, count_frames)

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a" if resume else "w") as sink, ThreadPoolExecutor(client.config.max_in_flight) as pool:
        pending: set[Future[dict[str, Any]]] = set()

        def write(finished: Iterable[Future[dict[str, Any]]]) -> None:
            for future in finished:
                record = future.result()  # a DeepfakeError other than a file's own stops the scan here
                sink.write(json.dumps(json_safe(record)) + "\n")
                sink.flush()
                if record.get("error"):
                    tally.failures.append((record["path"], record["error"]))
                else:
                    tally.verdicts[record["verdict"]] += 1
                if on_file:
                    on_file(record)

        try:
            for path in collect(paths):
                if not path.is_file():
                    pending.add(pool.submit(_missing, path))
                elif resume and FileKey.of(path) in done:
                    tally.skipped += 1
                    continue
                else:
                    pending.add(pool.submit(one, path))
                if len(pending) >= 2 * client.config.max_in_flight:  # bounded: a folder of 100,000 files is fine
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    write(finished)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                write(finished)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return tally


def _missing(path: Path) -> dict[str, Any]:
    return {**_unread(path), "error": f"{path}: no such file"}


def _unread(path: Path) -> dict[str, Any]:
    return {"path": str(path), "resolved": str(path.resolve()), "size": None, "mtime_ns": None, "kind": None}


def write_csv(jsonl: Path, path: Path) -> int:
    """A one-line-per-file summary of a scan's JSON Lines (the last record of each file wins)."""
    records: dict[str, dict[str, Any]] = {}
    for line in jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
            records[record["resolved"]] = record
        except (ValueError, KeyError, TypeError):
            continue
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in records.values():
            writer.writerow({key: record.get(key) for key in CSV_FIELDS})
    return len(records)
