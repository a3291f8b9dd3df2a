"""The report: targets, their PASS/FAIL checks, and docs/benchmark.md rendered from a run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepfake_client import DEFAULT_FRAMES_PER_REQUEST
from handler.settings import PRECISIONS
from scripts.bench.benchmark.analysts import analysts_markdown, scan_rounds_text
from scripts.bench.benchmark.faces import FACE_MODES, faces_markdown, round_ratios
from scripts.bench.benchmark.gpu import gpu_markdown
from scripts.bench.benchmark.grpc_wire import grpc_markdown
from scripts.bench.benchmark.harness import CONCURRENCY, TARGETS
from scripts.bench.benchmark.hints import hints_markdown
from scripts.bench.benchmark.jit import jit_markdown
from scripts.bench.benchmark.overlap import overlap_markdown
from scripts.bench.benchmark.packing import packing_markdown
from scripts.operations.archives import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FACE_WORKERS,
    DEFAULT_MAX_BATCH_DELAY_MS,
)
from scripts.operations.precision import DEFAULT_PRECISION


def _measured_alone(results: dict[str, Any], name: str) -> list[str]:
    """A note under a section re-measured by ``--only`` after the run the rest of the report comes from (the GPU
    section: on the machine it names, which has the GPU this one lacks)."""
    when = results[name].get("measured_alone")
    if when is None:
        return []
    cpu, run_cpu = results[name].get("measured_on"), results.get("machine", {}).get("cpu")
    if name == "gpu":
        where = " on the machine named above"
    elif cpu is not None and cpu != run_cpu:  # the run's CPU, where it recorded one, was another
        where = f" on {'another CPU, ' if run_cpu else ''}{_cpu_words(cpu)}"
    else:
        where = ""
    return [
        "",
        f"_This section was measured alone (`--only {name}`, {when}){where}, not in the run the rest of this "
        "report comes from; its comparisons are side by side within it._",
    ]


def _round_range(images: dict[str, Any]) -> str:
    """Face mode's share of full mode round by round (section 8 measures them in turn), when measured so."""
    ratios = round_ratios(images)
    return f", {min(ratios):.0%}-{max(ratios):.0%} round by round" if ratios else ""


def _clip_explanation(faces: dict[str, Any], frames: int, cpus: int, detect_ms: float) -> str:
    """Why the face-mode clip takes what it takes beside full mode: the core time face mode adds per frame
    (section 8's ``clip_frame_costs``; runs before it had only the still frames' detection time)."""
    allowed, full = TARGETS["face_video_vs_full"], faces["video"]["full"]["end_to_end_s"]
    leaves = f"the target leaves face mode {allowed - 1:.1f} x {full:.2f} s = {(allowed - 1) * full:.2f} s more"
    costs = faces.get("clip_frame_costs")
    if costs is None:
        alone = frames * detect_ms / 1e3 / cpus
        return (
            f"{leaves}, and detection takes {frames} frames x {detect_ms:.0f} ms on {cpus} cores = {alone:.2f} s alone"
        )
    encode = costs["encode_whole_ms"] - costs["encode_224_ms"]
    decode = costs["decode_whole_ms"] - costs["decode_224_ms"]
    added = costs["detection_ms"] + encode + decode
    return (
        f"{leaves}; per frame, face mode adds {costs['detection_ms']:.1f} ms of detection on the clip's frames, "
        f"{encode:.1f} ms more encoding the whole frame in the client ({costs['encode_whole_ms']:.1f} ms against "
        f"{costs['encode_224_ms']:.1f} at 224 px) and {decode:.1f} ms more decoding it in the worker: {added:.1f} ms "
        f"of core time, {frames} frames on {cpus} cores = {frames * added / 1e3 / cpus:.2f} s"
    )


def clients_ms_per_request(results: dict[str, Any]) -> float:
    """The crowd's own CPU per request under the default mode's crowd (one image per request), in ms."""
    crowd = results["served"][DEFAULT_PRECISION]["crowd"]
    return crowd["cores"]["clients"] / crowd["images_per_s"] * 1e3


Check = tuple[str, bool | None, str]  # a target, PASS (True), FAIL (False) or not measurable here (None), and why
STATUS = {True: "PASS", False: "FAIL", None: "N/A"}


def ran_as(served_mode: dict[str, Any], mode: str) -> str | None:
    """Why the served ``mode`` did not run as itself, from its worker's ``describe``: a bf16 archive runs as fp32
    on a CPU without BF16 (handler.runtimes.plan_precision); None when it ran as asked (or an older run)."""
    runtime = served_mode.get("runtime") or {}
    precision = runtime.get("precision", mode)
    if precision == mode:
        return None
    return f"the {mode} archive ran as {precision}" + (f": {runtime['fallback']}" if runtime.get("fallback") else "")


def _lacks_bf16(machine: dict[str, Any]) -> bool:
    """Whether the run's CPU had no BF16, as OpenVINO saw it (serving's rule: handler.runtimes.plan_precision);
    False for a run that did not record it."""
    capabilities = machine.get("openvino_capabilities")
    return capabilities is not None and "BF16" not in capabilities


def _cpu(machine: dict[str, Any]) -> str:
    """The run's CPU, when the run recorded it: its model and the instruction sets its int8 and bf16 speed need."""
    cpu = machine.get("cpu")
    if not cpu:
        return machine["processor"]
    return _cpu_words(cpu, "no AVX-512 BF16 or AMX: bf16 runs as fp32" if _lacks_bf16(machine) else "")


def _cpu_words(cpu: dict[str, Any], missing: str = "") -> str:
    """A recorded CPU (``harness.cpu_description``): its model, its speed-relevant instruction sets, what it lacks."""
    sets = cpu.get("instruction_sets")
    if sets is None:
        return cpu["model"]
    return f"{cpu['model']}; {', '.join(sets) or 'none of AVX2, AVX-512, VNNI'}" + (f"; {missing}" if missing else "")


def _mode_label(mode: str, measured: dict[str, Any]) -> str:
    """A mode's row name, saying so where it ran as another precision (``precision``: in-process; ``runtime``:
    the served worker's)."""
    precision = measured.get("precision") or (measured.get("runtime") or {}).get("precision") or mode
    return mode if precision == mode else f"{mode} (ran as {precision}: this CPU cannot run {mode})"


def _serial_bound(crowd: dict[str, Any]) -> str:
    """What the worker's own steps allow a crowd: it decodes a batch, then infers it, one after the other (it
    gets the next batch only once it has answered), so batches back to back would give at most this rate."""
    if "decode_ms_per_batch" not in crowd or "inference_ms_per_batch" not in crowd:
        return ""
    batch, decode, inference = crowd["mean_batch"], crowd["decode_ms_per_batch"], crowd["inference_ms_per_batch"]
    return (
        f"; per batch of {batch:.1f} the worker decoded {decode:.1f} ms, then inferred {inference:.1f} ms: "
        f"{batch * 1e3 / (decode + inference):.0f} images/s with batches back to back"
    )


def checks(results: dict[str, Any]) -> list[Check]:
    served, ceiling, stock = results["served"], results["ceiling"], results["stock"]
    cpus = results["machine"]["cpus"]  # the run's machine, not the one rendering the report
    default = served[DEFAULT_PRECISION]
    rows: list[Check] = []
    for mode in PRECISIONS:
        if (why := ran_as(served[mode], mode)) is not None:  # its figures are another mode's: nothing to check
            rows.append((f"{mode} served, its targets", None, f"not measured on this CPU: {why}"))
            continue
        rate, target = served[mode]["crowd"]["images_per_s"], TARGETS["served_images_per_s"][mode]
        in_turn = served[mode].get("ceiling_in_turn")  # measured in turn with the crowd (older runs: section 1's)
        inproc = (in_turn or ceiling[f"openvino {mode}"])["images_per_s"]
        rows.append((f"{mode} served >= {target:g} images/s", rate >= target, f"{rate:.1f} images/s"))
        share = TARGETS["served_vs_in_process"][mode]
        rounds = ""  # the crowd of sections 2-4, measured in turn with the ceiling; section 10's packed one was not
        if in_turn:
            ratios = [c / i for c, i in zip(served[mode]["crowd"]["rounds"], in_turn["rounds"], strict=True)]
            rounds = (
                f", {len(ratios)} rounds of in-process and served in turn, {min(ratios):.0%}-{max(ratios):.0%} "
                "round by round"
            )
        crowds = [("one image per request", served[mode]["crowd"], rounds)]
        if mode == DEFAULT_PRECISION:  # video frames travel packed (section 10)
            packed = results["packing"]["rows"][str(DEFAULT_FRAMES_PER_REQUEST)]["crowd"]
            how = f"video frames, {DEFAULT_FRAMES_PER_REQUEST} per request (the client's default)"
            crowds.append((how, packed, ""))
        for how, crowd, rounds in crowds:
            rate, cores = crowd["images_per_s"], crowd["cores"]
            rows.append(
                (
                    f"{mode} served >= {share:.0%} of in-process, {how}",
                    rate >= share * inproc,
                    f"{rate:.1f} / {inproc:.1f} = {rate / inproc:.0%}{rounds} (the worker had {cores['worker']:.2f} of "
                    f"{cpus} cores, Java {cores['frontend']:.2f}, clients {cores['clients']:.2f}: in-process x "
                    f"worker's share = {inproc * cores['worker'] / (cpus or 1):.0f}{_serial_bound(crowd)})",
                )
            )
    stock_rate = stock["crowd"]["images_per_s"]
    for name, mode, target in (
        (f"default ({DEFAULT_PRECISION})", DEFAULT_PRECISION, TARGETS["default_vs_stock"]),
        ("fp32", "fp32", TARGETS["fp32_vs_stock"]),
    ):
        ratio = served[mode]["crowd"]["images_per_s"] / stock_rate
        why = ran_as(served[mode], mode)
        rows.append(
            (f"{name} >= {target:g}x the stock handler", None, f"not measured on this CPU: {why}")
            if why
            else (f"{name} >= {target:g}x the stock handler", ratio >= target, f"{ratio:.2f}x")
        )
    lone, stock_lone = default["lone"]["p50_ms"], stock["lone"]["p50_ms"]
    rows.append(
        ("lone request p50, default mode < stock's", lone < stock_lone, f"{lone:.0f} ms vs {stock_lone:.0f} ms")
    )
    ours, original = results["video"]["ours"], results["video"]["original"]
    # decoding and inference share the 2 cores: their times alone, added, bound what overlap can reach
    inference_alone = ours["frames"] / ceiling[f"openvino {DEFAULT_PRECISION}"]["images_per_s"]
    floor = ours["decode_s"] + inference_alone
    rows.append(
        (
            f"{results['video']['seconds']:g} s 720p clip end to end <= {TARGETS['video_seconds']:g} s",
            ours["end_to_end_s"] <= TARGETS["video_seconds"],
            f"{ours['end_to_end_s']:.2f} s ({ours['frames']} frames, {DEFAULT_FRAMES_PER_REQUEST} per request; "
            f"decoding and resizing them alone {ours['decode_s']:.2f} s + inference alone {inference_alone:.2f} s "
            f"= {floor:.2f} s, both on the same {cpus} cores; in the clip the worker's inference took "
            f"{ours['inference_s']:.2f} s, its threads sharing the cores with the decoding)",
        )
    )
    speedup = original["end_to_end_s"] / ours["end_to_end_s"]
    rows.append(
        (
            f"video >= {TARGETS['video_vs_original']:g}x the original path",
            speedup >= TARGETS["video_vs_original"],
            f"{speedup:.1f}x ({original['end_to_end_s']:.2f} s vs {ours['end_to_end_s']:.2f} s; decode alone + "
            f"inference alone add up to {floor:.2f} s on these {cpus} cores: "
            f"{original['end_to_end_s'] / floor:.1f}x at that sum)",
        )
    )
    faces = results["faces"]
    detection = faces["detection"]
    rows.append(
        (
            f"face recall {TARGETS['face_recall']:.0%} on the test faces, 0 false faces",
            detection["recall"] >= TARGETS["face_recall"] and detection["false_faces"] == 0,
            f"{detection['found']}/{detection['faces']} faces found, {detection['false_faces']} false "
            f"(incl. {detection['no_face_images']} images without a face)",
        )
    )
    rows.append(
        (
            f"face detector's boxes within {TARGETS['face_box_gap_px']:g} px and scores within "
            f"{TARGETS['face_score_gap']:g} of facenet-pytorch's own path",
            detection["max_box_gap_px"] <= TARGETS["face_box_gap_px"]
            and detection["max_score_gap"] <= TARGETS["face_score_gap"]
            and detection["count_mismatches"] == 0,
            f"max {detection['max_box_gap_px']:.3f} px, {detection['max_score_gap']:.5f}, "
            f"{detection['count_mismatches']} frames with another face count, on the "
            f"{detection['faces'] + detection['no_face_images']} frames",
        )
    )
    # face mode does full mode's work plus detection on the same cores: what the target leaves detection
    detect_ms, full_rate = detection["ms_per_720p_frame"], faces["images_720p"]["full"]["images_per_s"]
    face_rate, share = faces["images_720p"]["face"]["images_per_s"], TARGETS["face_images_vs_full"]
    full_ms = cpus * 1e3 / full_rate  # core time per image in full mode
    rows.append(
        (
            f"face mode >= {share:.0%} of full mode's images/s (720p)",
            face_rate >= share * full_rate,
            f"{face_rate:.1f} / {full_rate:.1f} = {face_rate / full_rate:.0%}{_round_range(faces['images_720p'])} "
            f"(detection alone {detect_ms:.0f} ms per "
            f"frame on one core, facenet-pytorch's own path {detection['facenet_ms_per_720p_frame']:.0f} ms; the "
            f"target leaves it (1 / {share:g} - 1) x full mode's {full_ms:.0f} ms of core time per image = "
            f"{(1 / share - 1) * full_ms:.0f} ms)",
        )
    )
    video = {mode: faces["video"][mode]["end_to_end_s"] for mode in FACE_MODES}
    frames, allowed = faces["video"]["face"]["frames"], TARGETS["face_video_vs_full"]
    rows.append(
        (
            f"face-mode clip <= {allowed:g}x full mode",
            video["face"] <= allowed * video["full"],
            f"{video['face']:.2f} s vs {video['full']:.2f} s = {video['face'] / video['full']:.2f}x "
            f"({DEFAULT_FACE_WORKERS} workers, the default; one worker of all the cores: "
            f"{video['face_1_worker'] / video['full']:.2f}x; {_clip_explanation(faces, frames, cpus, detect_ms)})",
        )
    )
    cold = default["cold_start_s"]
    rows.append(
        (
            f"default mode READY <= {TARGETS['cold_start_s']:g} s after start",
            cold <= TARGETS["cold_start_s"],
            f"{cold:.1f} s",
        )
    )
    for label, modes in results["agreement"].items():
        measured = modes[DEFAULT_PRECISION]
        rows.append(
            (
                f"default mode agrees with fp32 ({label})",
                bool(measured["passes"]),
                f"labels {measured['label_agreement']:.2%}, mean |dp| {measured['mean_abs_fake_probability_diff']:.4f}",
            )
        )
    if "analysts" in results:
        a = results["analysts"]
        ratio = a["scan"]["images_per_s"] / a["crowd"]["images_per_s"]
        rows.append(
            (
                f"scan >= {TARGETS['scan_vs_crowd']:.0%} of the crowd's images/s",
                ratio >= TARGETS["scan_vs_crowd"],
                f"{a['scan']['images_per_s']:.1f} images/s, {ratio:.2f}x{scan_rounds_text(a)}",
            )
        )
    return rows


def _row(name: str, r: dict[str, Any], rss: float | None = None, ratio: float | None = None) -> str:
    cells = [name, f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}"]
    cells.append(f"{rss:.0f}" if rss is not None else "")
    cells.append(f"{ratio:.2f}x" if ratio is not None else "")
    return "| " + " | ".join(cells) + " |"


def _ceiling_label(name: str, measured: dict[str, Any], machine: dict[str, Any]) -> str:
    """Section 1's row name: an archive's mode as it ran; torch's bf16 autocast on a CPU without BF16 said so."""
    engine, _, mode = name.rpartition(" ")
    if engine == "openvino":
        return f"{engine} {_mode_label(mode, measured)}"
    if mode == "bf16" and _lacks_bf16(machine):
        return f"{name} (this CPU has no BF16 instructions)"
    return name


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    stock_rate = results["stock"]["crowd"]["images_per_s"]
    header = "| path | images/s | p50 ms | p99 ms | RSS MB | vs stock |\n| --- | --- | --- | --- | --- | --- |"
    lines = [
        "# Benchmark",
        "",
        f"Measured by `make benchmark` (`python -m scripts.bench.benchmark`) in one run on {m['cpus']} CPU cores "
        f"({_cpu(m)}), Python {m['python']}, torch {m['torch']}, TorchServe {m.get('torchserve', '0.12.0')}; "
        f"{results['model']}, "
        f"224x224 JPEG frames, batchSize {DEFAULT_BATCH_SIZE}, maxBatchDelay {DEFAULT_MAX_BATCH_DELAY_MS} ms, "
        f"{results.get('workers', 1)} worker{'s' * (results.get('workers', 1) > 1)}. "
        "Ratios within a section are measured side by side and hold run to run; absolute numbers follow this "
        "shared VM's speed at the time (whole runs here have differed by up to 2x, sections of one run by ~10%), "
        "so compare them within a section."
        + (" **Quick smoke run: numbers are meaningless.**" if results["quick"] else ""),
        "",
        "## Targets",
        "",
        "| check | result | measured |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {STATUS[ok]} | {detail} |" for name, ok, detail in checks(results)]
    lines += [
        "",
        "## 1. In-process ceiling (batches of 8, a fresh process each; p50/p99 per batch)",
        "",
        header,
    ]
    lines += [
        _row(_ceiling_label(name, r, m), r, r["rss_mb"], r["images_per_s"] / stock_rate)
        for name, r in results["ceiling"].items()
    ]
    lines += [
        "",
        f"## 2-4. Served ({CONCURRENCY} concurrent clients, distinct frames), the stock handler, the original app",
        "",
        "p50/p99 per request; RSS of the worker process(es)."
        + (
            f" Each server answered {results['served_warm_up']} requests before its crowd was measured: a running "
            "service (the first seconds after a start: sections 6 and 15)."
            if "served_warm_up" in results
            else ""
        )
        + (
            " Each mode's crowd was measured in rounds, each after that mode's in-process ceiling again (section 1's "
            "loop in a fresh process, the server idle meanwhile): the served/in-process targets compare the two "
            "measured in turn, so that this VM's drift weighs on both alike. In-process in turn, images/s: "
            + "; ".join(
                f"{mode} {r['ceiling_in_turn']['images_per_s']:.1f} ("
                + ", ".join(f"{v:.1f}" for v in r["ceiling_in_turn"]["rounds"])
                + ")"
                for mode, r in results["served"].items()
            )
            + "."
            if all("ceiling_in_turn" in r for r in results["served"].values())
            else ""
        ),
        "",
        header,
    ]
    for mode, r in results["served"].items():
        ratio = r["crowd"]["images_per_s"] / stock_rate
        lines.append(_row(f"ours, {_mode_label(mode, r)}", r["crowd"], r["worker_rss_mb"], ratio))
        if "crowd_oip" in r:
            oip = r["crowd_oip"]
            lines.append(_row(f"ours, {mode}, Open Inference Protocol", oip, None, oip["images_per_s"] / stock_rate))
    stock = results["stock"]
    lines.append(_row("stock ImageClassifier (fp32 eager)", stock["crowd"], stock["worker_rss_mb"], 1.0))
    for mode, r in results["served"].items():
        lines.append(_row(f"ours, {_mode_label(mode, r)}, lone request", r["lone"], None, None))
    lines.append(_row("stock ImageClassifier, lone request", stock["lone"], None, None))
    original = results["original_app"]
    lines.append(
        _row(
            "original app's path (in-process, one at a time, fp32)",
            original,
            original["rss_mb"],
            original["images_per_s"] / stock_rate,
        )
    )
    lines += [
        "",
        "Per batch in the worker (its log), under load:",
        "",
        "| mode | mean batch | decode + resize ms | inference ms |",
        "| --- | --- | --- | --- |",
    ]
    for mode, r in results["served"].items():
        c = r["crowd"]
        if "mean_batch" in c:
            lines.append(
                f"| {mode} | {c['mean_batch']:.1f} | {c['decode_ms_per_batch']:.1f} | "
                f"{c['inference_ms_per_batch']:.1f} |"
            )
    lines += [
        "",
        "CPU cores used during the crowd load (2 in all): the worker cannot have the whole machine that the "
        "in-process ceiling has, because TorchServe's Java frontend and the clients share it. The clients stand "
        "for callers on other machines, so they cost as little as they can: keep-alive `http.client` connections, "
        f"{clients_ms_per_request(results):.2f} ms of CPU per request under the {DEFAULT_PRECISION} crowd (the "
        "crowd used `requests` before 2026-12-01: ~0.9 ms, 0.12-0.17 cores of these 2).",
        "",
        "| path | worker | Java frontend | clients (this process) |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in [*((f"ours, {m}", r) for m, r in results["served"].items()), ("stock", results["stock"])]:
        cores = r["crowd"]["cores"]
        lines.append(f"| {name} | {cores['worker']:.2f} | {cores['frontend']:.2f} | {cores['clients']:.2f} |")
    v = results["video"]
    ours, orig = v["ours"], v["original"]
    lines += [
        "",
        f"## 5. Video: a {v['seconds']:g} s 720p30 H.264 clip at 2 fps ({ours['frames']} frames), default mode",
        "",
        "| path | end to end s | decode s | inference s |",
        "| --- | --- | --- | --- |",
        f"| `deepfake-detect video` (decode overlapped with batched inference, {DEFAULT_FRAMES_PER_REQUEST} frames "
        f"per request) | {ours['end_to_end_s']:.2f} | "
        f"{ours['decode_s']:.2f} | {ours['inference_s']:.2f} |",
        f"| original app's path (frames to JPEG files, then one at a time, fp32) | {orig['end_to_end_s']:.2f} | "
        f"{orig['decode_s']:.2f} | {orig['inference_s']:.2f} |",
        "",
        "Ours: after one warm-up run, as in sections 10-13 (a running service; cold start is section 6). "
        "Decode: sampling and encoding the frames alone (ours), or extracting them to files (original). "
        "Inference: the worker's own time in its log (ours), or the one-by-one loop (original).",
        "",
        f"Sampling decodes in full only the frames its samples show (the decoder skips the non-reference "
        f"frames no sample needs): {ours['sampling_s']:.2f} s and {ours['sampling_cpu_s']:.2f} CPU seconds for "
        f"the clip's {ours['frames']} samples, against {ours['every_frame_s']:.2f} s and "
        f"{ours['every_frame_cpu_s']:.2f} CPU seconds decoding every frame (the decoder's threads counted: on "
        f"cores shared with a local TorchServe, CPU time is what the clip waits for).",
        "",
        "## 6. Cold start: TorchServe start to worker READY",
        "",
        "| mode | seconds |",
        "| --- | --- |",
    ]
    lines += [f"| {mode} | {r['cold_start_s']:.1f} |" for mode, r in results["served"].items()]
    lines.append(f"| stock ImageClassifier | {results['stock']['cold_start_s']:.1f} |")
    lines += [
        "",
        "## 7. Agreement with fp32 on held-out images",
        "",
        "| model | mode | images | labels agree | mean abs fake-probability diff | max | within the bar |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, modes in results["agreement"].items():
        for mode, a in modes.items():
            lines.append(
                f"| {label} | {_mode_label(mode, {'precision': a.get('ran_as')})} | {a['images']} | "
                f"{a['label_agreement']:.2%} | "
                f"{a['mean_abs_fake_probability_diff']:.4f} | {a['max_abs_fake_probability_diff']:.4f} | "
                f"{'yes' if a['passes'] else 'no'} |"
            )
    j = results["jpeg_draft"]
    lines += [
        "",
        f"## Large uploads: JPEG draft decode ({j['images']} {j['width']}x{j['height']} JPEGs, opt-in `JPEG_DRAFT=1`)",
        "",
        "| decode | decode + resize ms per image |",
        "| --- | --- |",
        f"| exact (default) | {j['exact_decode_ms']:.1f} |",
        f"| draft (libjpeg DCT scaling) | {j['draft_decode_ms']:.1f} |",
        "",
        f"Deviation of the draft decode (fp32): labels agree {j['label_agreement']:.2%}, mean |fake probability "
        f"diff| {j['mean_abs_fake_probability_diff']:.4f}, max {j['max_abs_fake_probability_diff']:.4f}.",
    ]
    lines += ["", faces_markdown(results["faces"], results["video"]["seconds"]), *_measured_alone(results, "faces")]
    if results["batch_delay"]:
        lines += [
            "",
            f"## maxBatchDelay, default mode ({DEFAULT_PRECISION})",
            "",
            f"| maxBatchDelay ms | lone p50 ms | lone p99 ms | {CONCURRENCY} concurrent images/s | mean batch |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {d['max_batch_delay_ms']} | {d['lone']['p50_ms']:.0f} | {d['lone']['p99_ms']:.0f} | "
            f"{d['crowd']['images_per_s']:.1f} | {d['crowd'].get('mean_batch', float('nan')):.1f} |"
            for d in results["batch_delay"]
        ]
    if "analysts" in results:
        lines += ["", analysts_markdown(results["analysts"]), *_measured_alone(results, "analysts")]
    if "packing" in results:
        lines += ["", packing_markdown(results["packing"]), *_measured_alone(results, "packing")]
    if "hints" in results:
        lines += ["", hints_markdown(results["hints"]), *_measured_alone(results, "hints")]
    if "overlap" in results:
        lines += ["", overlap_markdown(results["overlap"]), *_measured_alone(results, "overlap")]
    if "grpc" in results:
        lines += ["", grpc_markdown(results["grpc"]), *_measured_alone(results, "grpc")]
    if "gpu" in results:
        lines += ["", gpu_markdown(results["gpu"]), *_measured_alone(results, "gpu")]
    if "jit" in results:
        lines += ["", jit_markdown(results["jit"]), *_measured_alone(results, "jit")]
    return "\n".join(lines) + "\n"


README_START = "<!-- benchmark: generated from docs/benchmark.json by make benchmark; do not edit -->"
README_END = "<!-- /benchmark -->"


def readme_headline(results: dict[str, Any]) -> str:
    """The README's benchmark headline, every figure from ``results`` (make benchmark rewrites it in the
    README; a test checks that the README holds exactly this for the committed docs/benchmark.json)."""
    served, stock = results["served"], results["stock"]
    stock_rate = stock["crowd"]["images_per_s"]

    def row(name: str, crowd: dict[str, Any], lone: dict[str, Any] | None) -> str:
        p50 = f"{lone['p50_ms']:.0f} ms" if lone else ""
        return f"| {name} | {crowd['images_per_s']:.0f} | {crowd['images_per_s'] / stock_rate:.1f}x | {p50} |"

    rows = [
        f"| ResNet50, {CONCURRENCY} concurrent clients | images/s | vs stock | lone request p50 |",
        "| --- | --- | --- | --- |",
        row(
            f"ours, {DEFAULT_PRECISION} (default)",
            served[DEFAULT_PRECISION]["crowd"],
            served[DEFAULT_PRECISION]["lone"],
        ),
    ]
    if "crowd_oip" in served[DEFAULT_PRECISION]:
        rows.append(
            row(f"ours, {DEFAULT_PRECISION}, Open Inference Protocol", served[DEFAULT_PRECISION]["crowd_oip"], None)
        )
    rows += [
        row(f"ours, {_mode_label(mode, served[mode])}", served[mode]["crowd"], served[mode]["lone"])
        for mode in ("bf16", "fp32")
    ]
    rows.append(row("TorchServe's stock ImageClassifier, fp32", stock["crowd"], stock["lone"]))
    video, faces = results["video"], results["faces"]
    detection, face_video = faces["detection"], faces["video"]
    face_rate, full_rate = (faces["images_720p"][mode]["images_per_s"] for mode in ("face", "full"))
    text = [
        "",
        f"A {video['seconds']:.0f} s 720p clip at 2 fps: {video['ours']['end_to_end_s']:.1f} s end to end with "
        f"`deepfake-detect` ({DEFAULT_PRECISION}), {video['original']['end_to_end_s']:.1f} s the original app's way. "
        f"Worker READY {served[DEFAULT_PRECISION]['cold_start_s']:.1f} s after start. Face-crop mode (`CROP=face`): "
        f"{detection['found']}/{detection['faces']} test faces found and {detection['false_faces']} false ones on "
        f"{detection['no_face_images']} images without a face; 720p images "
        f"{face_rate:.0f}/s against {full_rate:.0f}/s "
        f"in full mode; the clip with a face in {face_video['face']['end_to_end_s']:.1f} s against "
        f"{face_video['full']['end_to_end_s']:.1f} s.",
    ]
    missed = [f"{name} ({measured})" for name, ok, measured in checks(results) if ok is False]
    if missed:
        text += ["", f"Targets not met ({len(missed)}; docs/benchmark.md says why): " + "; ".join(missed) + "."]
    return "\n".join([README_START, *rows, *text, README_END])


def update_readme(readme: Path, results: dict[str, Any]) -> None:
    """Replace the generated block of ``readme`` (between README_START and README_END) with this run's."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme}: no generated benchmark block ({README_START} ... {README_END})")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + readme_headline(results) + text[end:])
