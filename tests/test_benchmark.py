"""The benchmark's smoke run (`--quick`): every section runs against real servers and lands in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from handler.runtimes import cpu_capabilities, plan_precision
from scripts.bench.benchmark.cli import main
from scripts.bench.benchmark.crowd import CrowdError, _Crowd
from scripts.bench.benchmark.faces import FACE_MODES
from scripts.bench.benchmark.harness import MODEL_NAME, load
from tests.conftest import Server, frame_bytes

TIER = "integration"


def test_quick_benchmark_measures_every_section(tmp_path: Path):
    report = tmp_path / "bench.md"
    assert main(["--quick", "--report", str(report), "--requests", "24"]) == 0
    text = report.read_text()
    for heading in ("## Targets", "## 1. In-process ceiling", "## 2-4. Served", "## 5. Video", "## 6. Cold start",
                    "## 7. Agreement", "## 8. Face-crop mode"):  # fmt: skip
        assert heading in text
    results = json.loads(report.with_suffix(".json").read_text())
    assert set(results["served"]) == {"fp32", "bf16", "int8"}
    for mode, served in results["served"].items():
        assert served["crowd"]["images_per_s"] > 0 and served["cold_start_s"] > 0, mode
        assert served["crowd"]["max_batch"] > 1, f"{mode}: TorchServe never batched under 16 concurrent clients"
        assert served["crowd"]["inference_ms_per_batch"] > 0  # read back from the worker's own log
    ran_bf16 = plan_precision("bf16", cpu_capabilities())[0]  # fp32 on a CPU without BF16
    for mode, served in results["served"].items():  # what each worker ran, as its describe told the benchmark
        assert served["runtime"]["precision"] == plan_precision(mode, cpu_capabilities())[0], mode
    assert ("| bf16 served, its targets | N/A | not measured on this CPU" in text) is (ran_bf16 != "bf16")
    assert results["machine"]["cpu"]["model"] and "FP32" in results["machine"]["openvino_capabilities"]
    oip = results["served"]["int8"]["crowd_oip"]  # the default mode over the Open Inference Protocol too
    assert oip["images_per_s"] > 0 and oip["max_batch"] > 1
    assert "ours, int8, Open Inference Protocol" in text
    assert results["stock"]["crowd"]["images_per_s"] > 0
    faces = results["faces"]  # face-crop mode next to full mode
    assert faces["detection"]["faces"] > 0 and faces["detection"]["no_face_images"] > 0
    assert set(faces["images_720p"]) == set(faces["video"]) - {"client_detection_s"} == set(FACE_MODES)
    assert {faces["video"][mode]["frames"] for mode in FACE_MODES} == {8}
    assert len(faces["images_720p"]["full"]["rounds"]) == len(faces["images_720p"]["face"]["rounds"]) == 2  # in turn
    assert all(cost > 0 for cost in faces["clip_frame_costs"].values())  # what face mode adds to a clip's frame
    detection = faces["detection"]  # the detector beside facenet-pytorch's own path, on the same frames
    assert detection["facenet_ms_per_720p_frame"] > 0 and detection["count_mismatches"] == 0
    assert detection["max_box_gap_px"] <= 0.01 and detection["max_score_gap"] <= 1e-4
    assert min(detection["pnet_ms"], detection["rnet_onet_ms"], detection["pixels_ms"]) > 0  # where its time goes
    assert "face detector's boxes within 2 px" in text and "face mode >= 60% of full mode's images/s" in text
    assert "## 8. Face-crop mode" in text
    assert set(results["ceiling"]) == {"openvino fp32", "openvino bf16", "openvino int8", "torch eager fp32",
                                       "torch eager bf16"}  # fmt: skip
    analysts = results["analysts"]  # scan throughput and the cost of explanations, side by side
    assert analysts["scan"]["answered"] == analysts["scan"]["images"] == 48
    assert analysts["explain"]["explanations_during"] > 0 and analysts["explain"]["lone_p50_ms"] > 0
    assert "## 9. Analysts" in text
    packed = results["packing"]["rows"]  # frames per request: the clip and the crowd, side by side
    assert set(packed) == {"1", "4", "8"} and all(r["video"]["frames"] == 8 for r in packed.values())
    assert packed["8"]["crowd"]["per_request"] == 8 and packed["8"]["crowd"]["images_per_s"] > 0
    workers = results["overlap"]["rows"]  # one worker against two, side by side
    assert set(workers) == {"1", "2"} and all(r["video"]["frames"] == 8 for r in workers.values())
    assert workers["2"]["worker_rss_mb"] > workers["1"]["worker_rss_mb"]  # two models in memory
    assert "## 12. Decode beside inference" in text
    assert "## 10. Packed frames" in text and "## 15. The frontend's JIT compiler" in text
    wires = results["grpc"]["rows"]  # the same OIP bodies through TorchServe's gRPC frontend and its HTTP one
    assert set(wires) == {"http", "grpc"} and "## 13. gRPC instead of HTTP" in text
    for wire, row in wires.items():
        assert set(row["crowd"]) == {"1", "8"} and all(c["images_per_s"] > 0 for c in row["crowd"].values()), wire
        assert row["lone"]["p50_ms"] > 0 and row["video_s"] > 0, wire  # the clip through the client, each wire
    hints = results["hints"]["images_per_s"]  # OpenVINO's LATENCY (the worker's) beside THROUGHPUT, in-process
    assert hints["LATENCY"] > 0 and hints["THROUGHPUT"] > 0 and "## 11. OpenVINO performance hints" in text
    video = results["video"]
    assert video["ours"]["frames"] == video["original"]["frames"] == 8  # 4 s at 2 fps
    assert video["ours"]["sampling_s"] > 0 and video["ours"]["every_frame_cpu_s"] > 0
    assert "Sampling decodes in full only the frames its samples show" in text
    assert {"int8", "bf16"} == set(results["agreement"]["resnet18 (random)"])
    assert results["gpu"]["available"] is torch.cuda.is_available() and "## 14. The GPU" in text  # or why not


def test_sections_alone_merge_into_an_existing_report(tmp_path: Path):
    """``--only NAME ...`` measures those sections on one archive and keeps what the report's JSON already
    holds; a second call adds to it."""
    report = tmp_path / "bench.md"
    report.with_suffix(".json").write_text(json.dumps({"kept": True}))
    # two sections on one archive, then one without it; every section goes through the same code alone, and the
    # quick run above measures them all (measuring them all again alone took 7 of the suite's minutes on a Zen 3 CPU)
    assert main(["--quick", "--only", "analysts", "hints", "--report", str(report), "--requests", "24"]) == 0
    results = json.loads(report.with_suffix(".json").read_text())
    assert results["kept"] is True and results["analysts"]["scan"]["answered"] == 48
    assert results["hints"]["images_per_s"]["THROUGHPUT"] > 0
    assert report.read_text().startswith("## 9. Analysts")
    assert main(["--quick", "--only", "gpu", "--report", str(report), "--requests", "24"]) == 0
    results = json.loads(report.with_suffix(".json").read_text())
    measured = ("analysts", "hints", "gpu")
    assert results["kept"] is True and set(measured) <= set(results)
    assert all(results[name]["measured_alone"] for name in measured)  # the full report notes each under its section
    text = report.read_text()
    headings = ("## 9. Analysts", "## 11. OpenVINO performance hints", "## 14. The GPU")
    assert all(heading in text for heading in headings)


def test_a_crowd_split_over_processes_sends_each_request_once(server: Server):
    """Section 14's crowd comes from several client processes (one Python process's GIL bounded it): each
    sends its own share, warmed up first, and all start together; their answers, request ids and CPU add up."""
    payloads = [frame_bytes(seed) for seed in range(6)]
    split = load(server.ts, payloads, concurrency=6, total=30, processes=3)
    assert split["processes"] == 3 and split["answered"] == split["requests"] == 30
    assert split["cores"]["clients"] > 0  # the client processes' CPU, not this one's
    assert 1 <= split["max_batch"] <= 6  # each answer's request id found in TorchServe's batches
    alone = load(server.ts, payloads, concurrency=6, total=30)
    assert alone["processes"] == 1 and alone["answered"] == 30


def test_the_crowd_keeps_its_connections_and_stops_at_an_error_answer(server: Server):
    """The crowd's clients stand for remote ones, so they cost the shared cores as little as they can: a
    keep-alive connection per request in flight, kept from the warm-up to the measured run. An error
    answer is not counted as served: it stops the crowd with the status."""
    url = f"{server.ts.inference_url}/predictions/{MODEL_NAME}"
    headers = {"Authorization": f"Bearer {server.ts.keys()['inference']}", "Content-Type": "image/jpeg"}
    crowd = _Crowd(url, [frame_bytes(seed) for seed in range(9)], headers, concurrency=3)
    try:
        _, warm_ids = crowd.run(range(6))
        latencies, ids = crowd.run(range(30))
        assert len(latencies) == 30 and len(ids) == 30 and not ids & warm_ids  # every request answered once
        assert 1 <= crowd.connections_opened <= 3
        with pytest.raises(CrowdError, match=r"HTTP 4\d\d"):
            crowd.post(b"not an image")
        assert len(crowd.run(range(3))[1]) == 3  # the connection an error answer came on still serves
    finally:
        crowd.close()
