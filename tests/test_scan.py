"""deepfake-detect scan against a real TorchServe: a mixed folder, each file's own answer, failures recorded
and never stopping the scan, a CSV summary, and --resume after an interruption."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import pytest

from deepfake_client import DeepfakeClient
from scripts.bench import loadtest
from tests.conftest import Server, cli
from tests.media import constant_rate, write_video

TIER = "integration"


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "collection"
    (root / "trip" / "day1").mkdir(parents=True)
    for index, image in enumerate(loadtest.distinct_images(6, seed=21)):
        folder = root / "trip" / ("day1" if index % 2 else "")
        (folder / f"photo_{index}.dat").write_bytes(image)  # recognised by content, not by name
    write_video(root / "trip" / "clip.mp4", constant_rate(60, Fraction(30)))  # 2 s: 4 frames
    write_video(root / "short.mkv", constant_rate(15, Fraction(15)))  # 1 s
    (root / "notes.txt").write_text("not media\n")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def records(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, path.read_text().splitlines())}


def test_a_mixed_folder_is_scanned_file_by_file(server: Server, collection: Path, tmp_path: Path):
    out, summary = tmp_path / "scan.jsonl", tmp_path / "scan.csv"
    result = cli(server.ts, "scan", str(collection), "--out", str(out), "--csv", str(summary))
    assert result.returncode == 2, result.stderr  # two files could not be analysed
    found = records(out)
    assert len(found) == 10 and len(out.read_text().splitlines()) == 10
    with DeepfakeClient(server.ts.client_config()) as client:
        for index in range(6):
            record = found[f"photo_{index}.dat"]
            expected = client.predict_image(collection / record["path"].split("collection/", 1)[1])
            assert record["kind"] == "image" and record["verdict"] == expected.label
            assert record["fake_probability"] == pytest.approx(expected.fake_probability, abs=1e-4)
        video = client.analyze_video(collection / "trip" / "clip.mp4")
    clip = found["clip.mp4"]
    assert clip["kind"] == "video" and clip["verdict"] == video.summary.verdict and clip["reason"]
    assert [f["time"] for f in clip["timeline"]] == [0.0, 0.5, 1.0, 1.5]
    assert found["short.mkv"]["kind"] == "video" and found["short.mkv"]["verdict"] == "not enough frames"
    assert "neither an image nor a video" in found["notes.txt"]["error"]
    assert "cannot decode image" in found["broken.jpg"]["error"]
    assert "Scanned 10 files" in result.stdout and "2 failed:" in result.stdout
    assert "notes.txt" in result.stdout and "broken.jpg" in result.stdout
    with open(summary) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and {row["kind"] for row in rows} == {"image", "video", ""}


def test_a_scan_resumes_where_it_stopped(server: Server, collection: Path, tmp_path: Path):
    out = tmp_path / "scan.jsonl"
    first = cli(server.ts, "scan", str(collection / "trip" / "*.dat"), "--out", str(out))  # an interrupted scan
    assert first.returncode == 0 and len(records(out)) == 3
    with open(out, "a") as torn:
        torn.write('{"path": "half a rec')  # the line a kill left behind
    resumed = cli(server.ts, "scan", str(collection), "--out", str(out), "--resume", "--json")
    tally = json.loads(resumed.stdout)
    assert tally["skipped"] == 3 and tally["scanned"] == 7  # the 3 answered ones are not sent again
    again = cli(server.ts, "scan", str(collection), "--out", str(out), "--resume", "--json")
    assert json.loads(again.stdout)["skipped"] == 8 and json.loads(again.stdout)["scanned"] == 2  # failed ones retried


@pytest.mark.unit
def test_collect_expands_folders_and_globs_once_each(tmp_path: Path):
    from deepfake_client._scan import collect

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.jpg", "a/b/2.mp4", "a/b/3.png", "top.jpg"):
        (tmp_path / name).write_bytes(b"x")
    given = [tmp_path / "a", str(tmp_path / "**" / "*.jpg"), tmp_path / "top.jpg", tmp_path / "gone.jpg"]
    found = [p.relative_to(tmp_path).as_posix() for p in collect(given)]
    assert found == ["a/1.jpg", "a/b/2.mp4", "a/b/3.png", "top.jpg", "gone.jpg"]  # each once, a missing one kept


@pytest.mark.unit
def test_resume_skips_answered_files_only(tmp_path: Path):
    from deepfake_client._scan import FileKey, recorded_keys

    answered, failed = tmp_path / "a.jpg", tmp_path / "b.jpg"
    answered.write_bytes(b"1")
    failed.write_bytes(b"2")
    lines = [
        {"resolved": FileKey.of(answered).path, "size": 1, "mtime_ns": FileKey.of(answered).mtime_ns},
        {"resolved": FileKey.of(failed).path, "size": 1, "mtime_ns": FileKey.of(failed).mtime_ns, "error": "x"},
    ]
    out = tmp_path / "scan.jsonl"
    out.write_text("\n".join(map(json.dumps, lines)) + '\n{"torn')  # fmt: skip
    assert recorded_keys(out) == {FileKey.of(answered)}
    answered.write_bytes(b"changed")  # a file changed since: scanned again
    assert FileKey.of(answered) not in recorded_keys(out)
