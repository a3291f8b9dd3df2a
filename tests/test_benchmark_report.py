"""The benchmark's targets and report, on the committed run's JSON (no measuring): a target met renders
PASS, one missed renders FAIL and makes the run's exit code 1."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from deepfake_client import DEFAULT_FRAMES_PER_REQUEST
from scripts.bench.benchmark.cli import main
from scripts.bench.benchmark.jit import jit_summary, project_vmargs
from scripts.bench.benchmark.report import checks, markdown

TIER = "unit"

RUN = Path(__file__).resolve().parents[1] / "docs" / "benchmark.json"


def rows(results: dict) -> dict[str, bool]:
    return {name: ok for name, ok, _ in checks(results)}


def test_every_target_renders_pass_or_fail_from_the_numbers(tmp_path: Path):
    results = json.loads(RUN.read_text())
    crowd, stock = results["served"]["int8"]["crowd"], results["stock"]["crowd"]["images_per_s"]
    inproc = results["ceiling"]["openvino int8"]["images_per_s"]
    packed = results["packing"]["rows"][str(DEFAULT_FRAMES_PER_REQUEST)]["crowd"]  # the client's video frames
    crowd["images_per_s"] = packed["images_per_s"] = 1.1 * max(90.0, 4 * stock, 0.7 * inproc)  # every int8 target met
    results["analysts"]["scan"]["images_per_s"] = results["analysts"]["crowd"]["images_per_s"]
    checked = rows(results)
    touched = {
        "int8 served >= 90 images/s",
        "int8 served >= 70% of in-process, one image per request",
        f"int8 served >= 70% of in-process, video frames, {DEFAULT_FRAMES_PER_REQUEST} per request (the client's "
        "default)",
        "default (int8) >= 4x the stock handler",
        "scan >= 90% of the crowd's images/s",
    }
    assert all(checked[name] for name in touched)
    worse = copy.deepcopy(results)
    worse["served"]["int8"]["crowd"]["images_per_s"] = 12.0  # under every int8 target and under the stock handler
    worse["packing"]["rows"][str(DEFAULT_FRAMES_PER_REQUEST)]["crowd"]["images_per_s"] = 12.0
    worse["analysts"]["scan"]["images_per_s"] = 0.5 * worse["analysts"]["crowd"]["images_per_s"]
    failed = rows(worse)
    assert not any(failed[name] for name in touched)
    # exactly the rows the worse numbers touch turned to FAIL
    assert {name for name, ok in checked.items() if ok} - {name for name, ok in failed.items() if ok} == touched
    path = tmp_path / "worse.json"
    path.write_text(json.dumps(worse))
    report = tmp_path / "report.md"
    assert main(["--render", str(path), "--report", str(report)]) == 1
    text = report.read_text()
    assert "| int8 served >= 90 images/s | FAIL | 12.0 images/s |" in text
    assert "| scan >= 90% of the crowd's images/s | FAIL |" in text


def test_the_report_says_what_the_run_measured_on():
    results = json.loads(RUN.read_text())
    results["machine"] = {**results["machine"], "cpus": 16, "torchserve": "9.9.9"}
    results["workers"] = 2
    text = markdown(results)
    assert "in one run on 16 CPU cores" in text and "TorchServe 9.9.9" in text and "2 workers." in text
    assert " s on these 16 cores: " in text  # the checks use the run's cores, not this machine's
    assert "## 11. OpenVINO performance hints" in text and "not adopted: the worker keeps LATENCY" in text


def test_a_full_run_rewrites_the_readmes_generated_block(tmp_path: Path):
    from scripts.bench.benchmark.report import README_END, README_START, readme_headline

    results = json.loads(RUN.read_text())
    results["served"]["int8"]["crowd"]["images_per_s"] = 150.0
    run = tmp_path / "run.json"
    run.write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{README_START}\nold figures\n{README_END}\n\n## after\n")
    assert main(["--render", str(run), "--report", str(tmp_path / "b.md"), "--readme", str(readme)]) == 1
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith("\n\n## after\n") and "old figures" not in text
    assert readme_headline(results) in text and "| ours, int8 (default) | 150 |" in text


def test_a_section_measured_alone_says_so_and_the_face_checks_explain_themselves():
    """A section merged in by ``--only`` carries a note saying so; the others do not. Section 8's checks give
    its rounds' range and what face mode adds to each of the clip's frames."""
    results = json.loads(RUN.read_text())
    results["faces"]["measured_alone"] = "2026-01-02"
    results["faces"].pop("measured_on", None)  # the committed section may say where it was measured
    results["packing"].pop("measured_alone", None)
    text = markdown(results)
    assert "measured alone (`--only faces`, 2026-01-02), not in the run" in text and "`--only packing`" not in text
    # measured alone on another CPU than the run's: the note names it (a run that recorded no CPU: only this one's)
    xeon = {"model": "Intel(R) Xeon(R) Processor", "instruction_sets": ["avx2", "avx512f", "amx_bf16"]}
    results["faces"]["measured_on"] = xeon
    results["machine"]["cpu"] = {"model": "AMD EPYC 9B14", "instruction_sets": ["avx2", "avx512f", "avx512_bf16"]}
    assert "2026-01-02) on another CPU, Intel(R) Xeon(R) Processor; avx2, avx512f, amx_bf16, not" in markdown(results)
    results["machine"].pop("cpu")
    assert "2026-01-02) on Intel(R) Xeon(R) Processor; avx2, avx512f, amx_bf16, not" in markdown(results)
    results["machine"]["cpu"] = xeon
    assert "measured alone (`--only faces`, 2026-01-02), not in the run" in markdown(results)
    results["faces"].pop("measured_alone")
    assert "(`--only faces`" not in markdown(results)
    explained = {name: measured for name, _, measured in checks(results)}
    face_rate = explained["face mode >= 60% of full mode's images/s (720p)"]
    assert " round by round " in face_rate
    clip = explained["face-mode clip <= 1.6x full mode"]
    costs = results["faces"]["clip_frame_costs"]
    assert f"adds {costs['detection_ms']:.1f} ms of detection on the clip's frames" in clip
    del results["faces"]["clip_frame_costs"]  # a run from before the costs were measured still explains itself
    assert (
        "and detection takes 120 frames x" in {n: m for n, _, m in checks(results)}["face-mode clip <= 1.6x full mode"]
    )


def test_the_gpu_section_renders_its_measurement_or_says_why_there_is_none():
    """Section 14 from the committed run (measured alone on a lent GPU machine), and from a run without CUDA."""
    results = json.loads(RUN.read_text())
    gpu = results["gpu"]
    text = markdown(results)
    assert f"## 14. The GPU\n\nMeasured on one {gpu['device']}" in text
    assert "(`--only gpu`, " in text and "on the machine named above" in text
    for row in gpu["served"]["rows"]:  # a batch's time outside decoding and inference, per worker
        crowd = row["crowd"]
        period = 1e3 * row["workers"] * crowd["mean_batch"] / crowd["images_per_s"]
        other = period - crowd["decode_ms_per_batch"] - crowd["inference_ms_per_batch"]
        assert f"| {crowd['images_per_s']:.0f} | " in text and f" | {other:.1f} | " in text
    saturated = "the load generator, not only the server, bounds the rate"
    busiest = max(row["crowd"]["cores"]["clients"] for row in gpu["served"]["rows"])
    assert (saturated in text) is (busiest >= 0.9)  # the clients are one Python process: near one core, they bound it
    assert "concurrent clients of one 224 px frame per request (1 client process)" in text  # run 3: one process
    for row in gpu["served"]["rows"]:
        row["crowd"]["cores"]["clients"] = 0.5
    assert saturated not in markdown(results)
    for row in gpu["served"]["rows"]:  # a crowd split over 4 processes: the bound is near one core per process
        row["crowd"].update(processes=4, cores={**row["crowd"]["cores"], "clients": 2.0})
    assert saturated not in (text := markdown(results)) and "(4 client processes)" in text
    gpu["served"]["rows"][-1]["crowd"]["cores"]["clients"] = 3.8
    assert saturated in (text := markdown(results)) and "used 3.80 cores, close to one per process" in text
    results["gpu"] = {"available": False, "reason": "no CUDA device on this machine"}
    text = markdown(results)
    assert "Not measured: no CUDA device on this machine. The GPU path is tested" in text
    assert "Measured on one" not in text


def test_the_jit_section_keeps_the_vmargs_only_while_its_figures_support_them():
    """Section 15 from the committed run: every round of both configurations, measured with the JVM options
    config.properties sets today; the same rounds with the project's frontend slower, early or settled, tell
    the reader to remove them."""
    results = json.loads(RUN.read_text())
    jit = results["jit"]
    assert jit["vmargs"] == project_vmargs()  # the figures are about today's configuration
    text = markdown(results)
    assert "## 15. The frontend's JIT compiler, from a fresh start" in text
    default, project = (jit["configs"][name]["rounds"] for name in ("jvm_default", "project"))
    for index, (a, b) in enumerate(zip(default, project, strict=True)):
        assert (
            f"| {(index + 1) * jit['per_round']} | {a['images_per_s']:.1f} | {a['frontend_ms_per_request']:.2f} | "
            f"{b['images_per_s']:.1f} | {b['frontend_ms_per_request']:.2f} |"
        ) in text
    assert jit_summary(jit)["kept"] and ": kept (as fast from the start" in text
    half = len(project) // 2
    for slower in (range(half), range(half, len(project))):  # slower while the JIT warms up, or once it settled
        changed = copy.deepcopy(results)
        for index in slower:
            changed["jit"]["configs"]["project"]["rounds"][index]["images_per_s"] = 0.9 * default[index]["images_per_s"]
        assert "do not support it" in (text := markdown(changed)) and "remove `vmargs` from config.properties" in text


def test_the_served_section_says_how_many_requests_each_server_answered_before_its_crowd():
    """Sections 2-4 measure a running service (``RUNNING_SERVICE_WARM_UP`` requests first); a run from before
    that warm-up renders without the sentence."""
    results = json.loads(RUN.read_text())
    results["served_warm_up"] = 800
    assert "Each server answered 800 requests before its crowd was measured: a running service" in markdown(results)
    del results["served_warm_up"]
    assert "before its crowd was measured" not in markdown(results)


def test_the_scan_check_gives_its_rounds_against_the_crowds_measured_in_turn():
    """Section 9 measures the crowd and a scan pass in turn (SCAN_ROUNDS); its check and its text give the
    ratio over all rounds and each round's; a run from before the rounds renders the ratio alone."""
    results = json.loads(RUN.read_text())
    analysts = results["analysts"]
    scans, crowds = analysts["scan"]["rounds"], analysts["crowd"]["rounds"]
    ratios = [scan / crowd for scan, crowd in zip(scans, crowds, strict=True)]
    explained = {name: measured for name, _, measured in checks(results)}["scan >= 90% of the crowd's images/s"]
    assert f"{min(ratios):.2f}x-{max(ratios):.2f}x round by round" in explained
    assert f"{len(ratios)} rounds of the crowd and a scan pass in turn" in markdown(results)
    del analysts["scan"]["rounds"], analysts["crowd"]["rounds"]
    assert "round by round" not in {name: m for name, _, m in checks(results)}["scan >= 90% of the crowd's images/s"]


def test_the_served_ratios_compare_each_crowd_with_the_ceiling_measured_in_turn_with_it():
    """Sections 2-4 measure each mode's crowd in rounds, each after its in-process ceiling again
    (SERVED_ROUNDS): the served/in-process check divides by that ceiling, not section 1's measured minutes
    earlier, and gives the ratio round by round; a run from before the rounds uses section 1's."""
    results = json.loads(RUN.read_text())
    name = "bf16 served >= 90% of in-process, one image per request"
    crowd = results["served"]["bf16"]["crowd"]
    crowd["rounds"] = [100.0, 98.0, 96.0]
    crowd["images_per_s"] = 98.0
    results["ceiling"]["openvino bf16"]["images_per_s"] = 120.0  # section 1: 98 / 120 = 82%, a FAIL
    results["served"]["bf16"]["ceiling_in_turn"] = {"images_per_s": 105.0, "rounds": [110.0, 105.0, 100.0]}
    crowd.update(mean_batch=8.0, decode_ms_per_batch=4.0, inference_ms_per_batch=68.0)  # the worker's log
    ok, measured = {row: (ok, m) for row, ok, m in checks(results)}[name]
    assert ok and measured.startswith("98.0 / 105.0 = 93%, 3 rounds of in-process and served in turn, 91%-96% round")
    assert measured.endswith("per batch of 8.0 the worker decoded 4.0 ms, then inferred 68.0 ms: 111 images/s with "
                             "batches back to back)")  # fmt: skip
    for served in results["served"].values():
        served["crowd"].setdefault("rounds", [served["crowd"]["images_per_s"]])
        served.setdefault("ceiling_in_turn", {"images_per_s": 50.0, "rounds": [50.0]})
    assert "In-process in turn, images/s: " in markdown(results) and "bf16 105.0 (110.0, 105.0, 100.0)" in markdown(
        results
    )
    for mode in results["served"]:
        del results["served"][mode]["ceiling_in_turn"]
    ok, measured = {row: (ok, m) for row, ok, m in checks(results)}[name]
    assert not ok and measured.startswith("98.0 / 120.0 = 82% (the worker")
    assert "In-process in turn" not in markdown(results)


def test_the_face_section_says_how_many_requests_each_server_answered_before_its_rounds():
    """Section 8's servers answer RUNNING_SERVICE_WARM_UP requests before the rounds (a face worker's first
    requests run its detector on new shapes); a run from before that warm-up renders without the clause."""
    results = json.loads(RUN.read_text())
    results["faces"]["warm_up"] = 800
    text = markdown(results)
    assert "were served at once, each answered 800 requests first (a running service), and measured in turn" in text
    del results["faces"]["warm_up"]
    assert "were served at once and measured in turn" in markdown(results)


def test_rounds_measured_in_turn_merge_into_one_measurement():
    """``merged_rounds`` (a server's crowd rounds) and ``merged_ceilings`` (in-process rounds) weigh each round
    by its time, keep each round's rate, and merge the worker's per-batch times round by round."""
    from scripts.bench.benchmark.harness import BATCH_TIMES, merged_ceilings, merged_rounds

    def crowd(rate: float, decode: float, p99: float) -> dict:
        return {"requests": 100, "per_request": 1, "images_per_s": rate, "p50_ms": 10.0, "p99_ms": p99,
                "max_batch": 8, "mean_batch": 8.0, "decode_ms_per_batch": decode, "inference_ms_per_batch": 40.0,
                "inference_ms_total": 500.0}  # fmt: skip

    merged = merged_rounds([crowd(100.0, 4.0, 30.0), crowd(50.0, 6.0, 90.0)])
    assert merged["images_per_s"] == 200 / 3 and merged["rounds"] == [100.0, 50.0]  # 200 images in 3 s
    assert merged["requests"] == 200 and merged["p99_ms"] == 90.0
    assert merged["decode_ms_per_batch"] == 5.0 and merged["inference_ms_total"] == 1000.0
    # a short round can end before the worker's log has its batches: the log's figures come from the others
    unlogged = {key: value for key, value in crowd(50.0, 0.0, 90.0).items() if key not in BATCH_TIMES}
    merged = merged_rounds([unlogged, crowd(100.0, 4.0, 30.0)])
    assert merged["decode_ms_per_batch"] == 4.0 and merged["mean_batch"] == 8.0 and merged["rounds"] == [50.0, 100.0]
    assert not set(BATCH_TIMES) & set(merged_rounds([unlogged, unlogged]))  # no figure the log did not give
    ceilings = merged_ceilings([{"images_per_s": 100.0}, {"images_per_s": 50.0}])
    assert ceilings == {"images_per_s": 200 / 3, "rounds": [100.0, 50.0]}


NO_BF16 = "bf16 needs the CPU capability BF16, which this CPU lacks"  # handler.runtimes.plan_precision's words


def test_a_mode_this_cpu_cannot_run_is_not_checked_and_every_row_says_what_ran():
    """On a CPU without BF16 the bf16 archive's worker runs fp32 (its describe says so): the report checks no bf16
    target on those figures (N/A, not PASS or FAIL) and names the rows by what ran; the CPU is in the header."""
    from scripts.bench.benchmark.report import readme_headline

    results = json.loads(RUN.read_text())
    served = results["served"]["bf16"]
    served["runtime"] = {"engine": "openvino", "precision": "fp32", "requested": "bf16", "fallback": NO_BF16}
    served["crowd"]["images_per_s"] = 1.0  # under every bf16 target: they would FAIL, were they checked
    results["ceiling"]["openvino bf16"]["precision"] = "fp32"
    results["agreement"]["ResNet18 demo"]["bf16"]["ran_as"] = "fp32"
    results["machine"]["cpu"] = {"model": "AMD EPYC 7B13", "instruction_sets": ["avx2"]}
    results["machine"]["openvino_capabilities"] = ["FP32", "INT8"]
    checked = {name: (ok, measured) for name, ok, measured in checks(results)}
    why = f"not measured on this CPU: the bf16 archive ran as fp32: {NO_BF16}"
    assert checked["bf16 served, its targets"] == (None, why)
    assert not [name for name in checked if name.startswith("bf16 served >=")]
    assert checked["int8 served >= 90 images/s"][0] is not None  # the modes that ran as themselves are checked
    text = markdown(results)
    assert f"| bf16 served, its targets | N/A | {why} |" in text
    assert "in one run on 2 CPU cores (AMD EPYC 7B13; avx2; no AVX-512 BF16 or AMX: bf16 runs as fp32)" in text
    ran = "(ran as fp32: this CPU cannot run bf16)"
    emulated = "| torch eager bf16 (this CPU has no BF16 instructions) |"
    for row in (f"| openvino bf16 {ran} |", f"| ours, bf16 {ran} |", f"| ours, bf16 {ran}, lone request |",
                f"| ResNet18 demo | bf16 {ran} |", emulated):  # fmt: skip
        assert row in text, row
    assert "| openvino int8 |" in text and "| ResNet50 demo-trained | bf16 |" in text  # those ran as asked
    headline = readme_headline(results)
    assert f"| ours, bf16 {ran} | 1 |" in headline and "bf16 served" not in headline  # not among the targets missed


def test_a_target_not_measurable_here_does_not_fail_the_run(tmp_path: Path, monkeypatch):
    import scripts.bench.benchmark.cli as cli

    path = tmp_path / "run.json"
    path.write_text(RUN.read_text())
    for verdicts, exit_code in (((True, None), 0), ((True, None, False), 1)):
        rows = [(f"target {i}", ok, "") for i, ok in enumerate(verdicts)]
        monkeypatch.setattr(cli, "checks", lambda _results, rows=rows: rows)
        assert main(["--render", str(path)]) == exit_code


def test_the_run_records_its_cpu_from_proc_cpuinfo(tmp_path: Path):
    from scripts.bench.benchmark.harness import cpu_description

    cpuinfo = tmp_path / "cpuinfo"
    core = "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
    cpuinfo.write_text(f"processor\t: 0\n{core}\nprocessor\t: 1\n{core}")
    described = cpu_description(cpuinfo)
    assert described["model"] == "AMD EPYC 9R14 96-Core Processor"
    assert described["instruction_sets"] == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    missing = cpu_description(tmp_path / "absent")
    assert missing["instruction_sets"] is None and missing["model"]
    results = json.loads(RUN.read_text())
    results["machine"]["cpu"] = {"model": "AMD EPYC 9R14", "instruction_sets": ["avx2", "avx512f", "avx512_bf16"]}
    assert "on 2 CPU cores (AMD EPYC 9R14; avx2, avx512f, avx512_bf16), Python" in markdown(results)
