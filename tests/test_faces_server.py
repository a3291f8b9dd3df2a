"""Face-crop mode served: the server crops for every client (curl, library, CLI, OIP), images and video."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from deepfake_client import DeepfakeClient
from deepfake_client.contract import Prediction, oip_request, predictions_from_oip
from handler.faces import crop_box
from scripts.synthetic.faces import ASTRONAUT_AWAY, TWO_PEOPLE_SECONDS, two_people_frame, write_two_people_clip
from tests.conftest import Server, archive_service, cli
from tests.faces import ASTRONAUT_FACE, CAMERA_FACE, face_video, pasted, photo, png_bytes, shifted

TIER = "integration"

MODEL = "faces"


def close(box: list[float], expected: tuple[float, ...], tolerance: float = 6.0) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))


def test_served_faces_match_the_in_process_reference_on_the_same_crops(server: Server):
    frame = pasted((1280, 720), (photo("astronaut"), (0, 100)), (photo("camera"), (700, 150)))
    payload = png_bytes(frame)
    response = server.predict(MODEL, payload, "image/png")
    assert response.status_code == 200, response.text
    answer = Prediction.from_json(response.json())
    faces = sorted(answer.faces, key=lambda f: f.box[0])
    assert len(faces) == 2
    assert close(faces[0].box, shifted(ASTRONAUT_FACE, (0, 100))) and close(
        faces[1].box, shifted(CAMERA_FACE, (700, 150))
    )
    service = archive_service(server.models[MODEL].archive)  # the worker's own code and runtime, in-process
    settings = server.models[MODEL].settings
    for face in faces:
        crop = frame.crop(crop_box(face.box, settings.face_margin, *frame.size))
        expected = service.logits(service.to_input(crop).unsqueeze(0))[0].tolist()
        assert face.prediction.logits == pytest.approx(expected, abs=1e-4)
    assert answer.fake_probability == max(f.prediction.fake_probability for f in faces)
    # the same over the Open Inference Protocol
    oip = requests.post(
        f"{server.ts.inference_url}/v2/models/{MODEL}/infer",
        json=oip_request([payload]),
        headers=server.headers(),
        timeout=120,
    )
    assert predictions_from_oip(oip.json()) == [answer]


def test_no_face_is_a_defined_4xx_for_every_client(server: Server, tmp_path: Path):
    coffee = png_bytes(photo("coffee"))
    response = server.predict(MODEL, coffee, "image/png")
    assert response.status_code == 422 and response.json()["type"] == "NoFace"
    oip = requests.post(
        f"{server.ts.inference_url}/v2/models/{MODEL}/infer",
        json=oip_request([coffee]),
        headers=server.headers(),
        timeout=120,
    )
    assert oip.status_code == 422 and "no face found" in oip.json()["error"]
    path = tmp_path / "coffee.png"
    path.write_bytes(coffee)
    text = cli(server.ts, "image", "--model", MODEL, str(path))
    assert text.returncode == 0 and "No face:" in text.stdout and "no face found" in text.stdout  # an answer
    as_json = cli(server.ts, "image", "--model", MODEL, "--json", "--protocol", "oip", str(path))
    assert as_json.returncode == 0 and json.loads(as_json.stdout)[0]["no_face"] is True


def test_a_video_in_face_mode_counts_frames_without_a_face(server: Server, tmp_path: Path):
    video, has_face = face_video(tmp_path / "pan.mp4")
    with DeepfakeClient(server.ts.client_config(model=MODEL)) as client:
        assert client.input_size() is None  # face mode: frames keep their full resolution
        analysis = client.analyze_video(video, fps=2.0)
    assert [f.no_face for f in analysis.frames] == [not face for face in has_face]
    with_face = [f for f in analysis.frames if not f.no_face]
    assert all(f.prediction is not None and len(f.prediction.faces) == 1 for f in with_face)
    xs = [f.prediction.faces[0].box[0] for f in with_face]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 200  # the face pans from left to right
    summary = analysis.summary
    assert (summary.frames, summary.analyzed, summary.no_face_frames, summary.failed) == (12, 4, 8, 0)
    plot = tmp_path / "timeline.png"
    report = cli(server.ts, "video", "--model", MODEL, str(video), "--plot", str(plot))
    assert report.returncode == 0, report.stderr
    assert "4 analysed, 0 failed, 8 without a face" in report.stdout and plot.stat().st_size > 0


def test_a_two_person_clip_gives_one_track_per_person(server: Server, tmp_path: Path):
    """scikit-image's two faces walk, cross, and one leaves and comes back: two people, each followed
    throughout, the returning one under their first number; the CLI prints one line per person and
    plots one line per person."""
    clip = write_two_people_clip(tmp_path / "two.mp4")
    plot = tmp_path / "people.png"
    done = cli(server.ts, "video", str(clip), "--model", MODEL, "--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    analysis = json.loads(done.stdout)
    tracks = analysis["tracks"]
    assert [t["person"] for t in tracks] == [1, 2]
    who = {}
    for track in tracks:
        names = set()
        for point in track["points"]:
            _, truth = two_people_frame(point["time"])
            near = [n for n, box in truth.items() if box is not None and close(point["box"], box, tolerance=8)]
            assert len(near) == 1, (point, truth)
            names |= set(near)
        assert len(names) == 1, f"{track['name']} is more than one person: {names}"  # never swapped
        who[names.pop()] = track
    assert set(who) == {"astronaut", "camera"}
    away_from, back_at = ASTRONAUT_AWAY
    assert who["astronaut"]["spans"] == [[0.0, away_from], [back_at, TWO_PEOPLE_SECONDS]]  # left, came back
    assert who["camera"]["spans"] == [[0.0, TWO_PEOPLE_SECONDS]] and who["camera"]["frames"] == 24
    for track in tracks:
        probabilities = [p["fake_probability"] for p in track["points"]]
        assert track["mean_fake_probability"] == pytest.approx(sum(probabilities) / len(probabilities))
        assert track["peak_fake_probability"] == max(probabilities)
    printed = cli(server.ts, "video", str(clip), "--model", MODEL).stdout
    assert "People (face tracks):     2" in printed
    assert "    Person 1: in view " in printed and "    Person 2: in view " in printed
    assert plot.stat().st_size > 0


def test_the_page_lists_people_and_outlines_faces(server: Server, tmp_path: Path):
    """The web page's video job in face mode: the tracks as the CLI gives them, each frame's faces outlined
    on its thumbnail; an image's faces outlined beside its overlay."""
    import base64
    import io
    import time

    from PIL import Image

    from deepfake_client import sample_frames
    from deepfake_client.web import WebConfig, create_app
    from deepfake_client.web.app import thumbnail

    web = create_app(WebConfig(client=server.ts.client_config(model=MODEL))).test_client()
    clip = write_two_people_clip(tmp_path / "two.mp4", seconds=3.0)

    def upload(name: str, data: bytes, query: str = ""):
        return web.post(f"/api/analyze{query}", data={"file": (io.BytesIO(data), name)},
                        content_type="multipart/form-data")  # fmt: skip

    started = upload("two.mp4", clip.read_bytes(), "?async=1").get_json()
    deadline = time.monotonic() + 120
    while (state := web.get(started["status"]).get_json())["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval, bounded by the deadline
    assert state["state"] == "done", state
    result = state["result"]
    assert [t["person"] for t in result["tracks"]] == [1, 2] and all(t["frames"] == 6 for t in result["tracks"])

    def pixels(url: str) -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")

    first = np.asarray(pixels(state["thumbnails"][0]), dtype=int)
    plain = np.asarray(thumbnail(next(sample_frames(clip, 2.0))), dtype=int)  # the same thumbnail, no boxes
    assert first.shape == plain.shape and first.shape[1] == 96
    assert np.abs(first - plain).max() > 80  # the faces are outlined (JPEG alone moves pixels far less)
    frame, _ = two_people_frame(1.0)
    answer = upload("two.png", png_bytes(frame)).get_json()
    assert answer["boxes"].startswith("data:image/jpeg;base64,") and len(answer["faces"]) == 2
    assert len(answer["explanation"]["heatmaps"]) == 2


def _memory_kb(pid: int, field: str) -> int:
    """A process's VmRSS (now) or VmHWM (its peak so far), in kB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def _peak_growth(server: Server, payload: bytes, content_type: str) -> tuple[requests.Response, int]:
    """The face server's answer to ``payload``, and by how many bytes the peak memory of the worker
    that answered grew above its size before (the largest growth among the workers; each worker's
    peak is reset first, so that an earlier request's does not count)."""
    with DeepfakeClient(server.ts.client_config(model=MODEL)) as client:
        pids = [int(worker["pid"]) for worker in client.describe(MODEL)["workers"]]
    for pid in pids:  # "5": the kernel resets the process's peak (VmHWM) to its present size
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = {pid: _memory_kb(pid, "VmRSS") for pid in pids}
    response = server.predict(MODEL, payload, content_type)
    return response, max(_memory_kb(pid, "VmHWM") - before[pid] for pid in pids) * 1024


def test_a_64_mp_upload_costs_a_face_worker_a_bounded_memory(server: Server):
    """The largest image the server takes (64 MP) in face mode: the face is found where it is, and the
    worker that detected it peaked at ~0.7 GB above its size before: the decoded image twice (Pillow's
    and the detector's array, 2 x 192 MB) and ~0.3 GB of detection; not the 12 bytes per pixel of a
    whole integral image and a 64 MP pyramid (1.25 GB of detection before, ~1.7 GB in all)."""
    side = 8000
    frame = pasted((side, side), (photo("astronaut").resize((2048, 2048)), (5000, 3000)))
    buffer = io.BytesIO()
    frame.save(buffer, format="JPEG", quality=90)
    response, grown = _peak_growth(server, buffer.getvalue(), "image/jpeg")
    assert response.status_code == 200, response.text
    [face] = Prediction.from_json(response.json()).faces
    assert close(face.box, shifted(ASTRONAUT_FACE, (5000, 3000), scale=4), tolerance=24)
    assert grown < 2**30, f"a face worker's peak grew by {grown / 2**20:.0f} MB"


def test_a_mosaic_of_faces_costs_a_face_worker_a_bounded_memory(server: Server):
    """A crafted 1920x1920 image, a mosaic of 1,600 faces of 48 px, gave MTCNN's later stages 8,000 and
    4,070 candidates in one batch each: +2.3 GB in the worker (measured in-process). They look at the most
    likely ones a chunk at a time: the answer is the archive's max_faces faces, and the worker's
    peak grows by less than 0.4 GB."""
    x1, y1, x2, y2 = ASTRONAUT_FACE
    face = photo("astronaut").crop((x1 - 30, y1 - 30, x2 + 30, y2 + 30)).resize((48, 48))
    mosaic = Image.fromarray(np.tile(np.asarray(face), (40, 40, 1)))
    response, grown = _peak_growth(server, png_bytes(mosaic), "image/png")
    assert response.status_code == 200, response.text
    assert len(Prediction.from_json(response.json()).faces) == server.models[MODEL].settings.max_faces
    assert grown < 400 * 2**20, f"a face worker's peak grew by {grown / 2**20:.0f} MB"
