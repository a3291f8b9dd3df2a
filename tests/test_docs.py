"""The docs' shell commands (tests/docs.py reads them): each is checked the way it can be here, or is
accounted for with the test that runs it elsewhere or the reason it cannot run on this machine."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest

from deepfake_contract import Prediction, predictions_from_oip
from tests.conftest import Server, image_bytes
from tests.docs import REPO_ROOT, Command, all_commands, elsewhere, shell_blocks

TIER = "unit"


def _arguments(command: Command) -> list[str]:
    argv = command.argv
    return argv[: argv.index(">")] if ">" in argv else argv  # a redirection is the shell's, not the program's


def check(command: Command) -> None:
    """Raise when ``command`` would not run as written (its program, target or options do not exist)."""
    argv = _arguments(command)
    if argv[0] == "make":
        result = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    elif argv[0] == "deepfake-detect":
        from deepfake_client._cli import get_parser

        get_parser().parse_args(argv[1:])
    elif argv[0].endswith("python") and argv[1] == "-m":
        module = importlib.import_module(argv[2])
        module.get_args_parser().parse_args(argv[3:])
    else:
        raise AssertionError(f"{command}: no check for this program; add one, or list it in tests/docs.py ELSEWHERE")


def test_every_documented_command_runs_as_written_or_is_accounted_for(capsys: pytest.CaptureFixture):
    commands = all_commands()
    assert len(commands) > 30  # the blocks were found
    unchecked = []
    for command in commands:
        if elsewhere(command) is not None:
            continue
        try:
            check(command)
        except SystemExit:  # argparse refused it
            unchecked.append(f"{command}\n{capsys.readouterr().err.strip()}")
        except AssertionError as exc:
            unchecked.append(str(exc))
    assert unchecked == [], "\n".join(unchecked)


def test_the_check_refuses_what_would_not_run():
    for text in ("deepfake-detect --protocol oip video clip.mp4", "make no-such-target",
                 ".venv/bin/python -m scripts.modeling.train --no-such-option 1", "rsync a b"):  # fmt: skip
        with pytest.raises((SystemExit, AssertionError)):
            check(Command("x.md", 1, text))


def _curl_script(doc: str, server: Server) -> str:
    block = next(lines for _, lines in shell_blocks(doc) if any(line.startswith("curl") for line in lines))
    ts = server.ts
    return (
        "\n".join(block)
        .replace("http://127.0.0.1:8080", ts.inference_url)
        .replace("runtime/key_file.json", str(ts.key_file))
    )


def _answers(stdout: str) -> list[dict]:
    decoder, answers, position = json.JSONDecoder(), [], 0
    while position < len(stdout):
        if stdout[position].isspace():
            position += 1
            continue
        answer, position = decoder.raw_decode(stdout, position)
        answers.append(answer)
    return answers


@pytest.mark.integration
def test_the_curl_examples_answer_as_documented(server: Server, tmp_path: Path):
    """The README's three native requests and docs/deploy.md's OIP request, run by bash word for word (the
    address and key file replaced by this TorchServe's), each answered for the same image."""
    (tmp_path / "face.jpg").write_bytes(image_bytes((180, 40, 60)))
    answers = {}
    for doc in ("README.md", "docs/deploy.md"):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", _curl_script(doc, server)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        answers[doc] = _answers(result.stdout)
    native = [Prediction.from_json(answer) for answer in answers["README.md"]]
    assert len(native) == 3 and native[0] == native[1] == native[2]  # raw body, multipart and JSON base64
    [oip] = answers["docs/deploy.md"]
    assert oip["id"] == "1" and predictions_from_oip(oip) == [native[0]]


def test_the_docs_name_only_existing_files():
    """Paths the docs' commands name in this repository exist (inputs such as face.jpg are the user's)."""
    for command in all_commands():
        for word in command.argv:
            if word.startswith(("deploy/", "docs/", "scripts/")) and not word.endswith(".png"):
                assert (REPO_ROOT / word).exists(), f"{command}: {word}"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_readmes_figures_are_the_last_benchmark_runs():
    """The README's benchmark block is generated from docs/benchmark.json (make benchmark rewrites it), and
    the figures quoted in its prose are that run's."""
    from scripts.bench.benchmark.jit import jit_summary
    from scripts.bench.benchmark.report import README_END, README_START, clients_ms_per_request, readme_headline

    results = json.loads((REPO_ROOT / "docs" / "benchmark.json").read_text())
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme[readme.index(README_START) : readme.index(README_END) + len(README_END)]
    assert block == readme_headline(results)
    rows = results["packing"]["rows"]
    video = {n: rows[n]["video"]["end_to_end_s"] for n in rows}
    crowd = {n: rows[n]["crowd"]["images_per_s"] for n in rows}
    e, a = results["analysts"]["explain"], results["analysts"]
    quoted = [
        f"the 60 s 720p clip {video['1']:.2f} s with 1 frame per request, {video['4']:.2f} s with 4, "
        f"{video['8']:.2f} s with 8; 16 clients {crowd['1']:.0f}, {crowd['4']:.0f} and {crowd['8']:.0f} images/s",
        f"an explanation takes {e['lone_p50_ms']:.0f} ms alone against a prediction's {a['lone']['p50_ms']:.0f} ms",
        f"({e['after_crowd']['images_per_s']:.0f} against {a['crowd']['images_per_s']:.0f} images/s under 16 clients)",
        f"predictions run at {e['beside_crowd']['images_per_s'] / a['crowd']['images_per_s']:.2f}x "
        f"(lone p50 {e['beside_lone']['p50_ms']:.0f} ms)",
        f"({e['worker_rss_mb_before']:,.0f} to {e['worker_rss_mb_after']:,.0f} MB)",
    ]
    ceiling = {name: row["images_per_s"] for name, row in results["ceiling"].items()}
    quoted.append(
        f"f32 {ceiling['openvino fp32']:.1f} images/s against {ceiling['torch eager fp32']:.1f} for torch eager, "
        f"bf16 {ceiling['openvino bf16']:.1f} against {ceiling['torch eager bf16']:.1f} for torch autocast, "
        f"int8 {ceiling['openvino int8']:.1f}"
    )
    rates = results["hints"]["images_per_s"]
    quoted.append(f"{rates['THROUGHPUT']:.1f} against {rates['LATENCY']:.1f} images/s")
    detection = results["faces"]["detection"]
    quoted.append(
        f"in {detection['ms_per_720p_frame']:.0f} ms per 720p frame on one core against "
        f"{detection['facenet_ms_per_720p_frame']:.0f} ms for facenet-pytorch's `MTCNN.detect`"
    )
    quoted.append(f"{detection['max_box_gap_px']:.3f} px at most on the benchmark's 48 frames")
    faces = results["faces"]["video"]
    quoted.append(
        f"the 60 s clip with a face in {faces['face']['end_to_end_s']:.1f} s against "
        f"{faces['face_1_worker']['end_to_end_s']:.1f} s for one worker with both threads"
    )
    sampling = results["video"]["ours"]  # what the client's sampling decodes, beside decoding every frame
    quoted.append(
        f"{sampling['sampling_s']:.2f} s and {sampling['sampling_cpu_s']:.2f} CPU seconds against "
        f"{sampling['every_frame_s']:.2f} s and {sampling['every_frame_cpu_s']:.2f} CPU seconds decoding every frame"
    )
    wires = results["grpc"]["rows"]
    crowds = {wire: {k: c["images_per_s"] for k, c in row["crowd"].items()} for wire, row in wires.items()}
    gain = {k: crowds["grpc"][k] / crowds["http"][k] for k in ("1", "8")}
    quoted.append(
        f"{gain['1']:.2f}x the crowd's rate with 1 frame per request, {gain['8']:.2f}x with 8, the clip "
        f"{wires['grpc']['video_s']:.2f} s against {wires['http']['video_s']:.2f} s"
    )
    jit, summary = results["jit"], jit_summary(results["jit"])
    rounds = len(jit["configs"]["project"]["rounds"])
    first, second = summary["half"] * jit["per_round"], (rounds - summary["half"]) * jit["per_round"]
    spread = {
        name: [r["frontend_ms_per_request"] for r in config["rounds"][: summary["half"]]]
        for name, config in jit["configs"].items()
    }
    quoted.append(
        f"the frontend took {min(spread['project']):.1f}-{max(spread['project']):.1f} ms of CPU per request against "
        f"{min(spread['jvm_default']):.1f}-{max(spread['jvm_default']):.1f} ms with the default tiers, and served "
        f"{summary['early']:.2f}x the images/s over the first {first:,} requests, {summary['late']:.2f}x over the next "
        f"{second:,}"
    )
    quoted.append(f"keep-alive `http.client` connections ({clients_ms_per_request(results):.2f} ms of CPU per request")
    flat = _flat(readme)
    for figure in quoted:
        assert _flat(figure) in flat, figure


def test_the_readme_names_every_section_the_benchmark_measures_alone():
    """The README's list of ``--only`` names is the benchmark's: a section added to one and not the other
    fails here."""
    import re

    from scripts.bench.benchmark.cli import ON_DEFAULT_ARCHIVE

    flat = _flat((REPO_ROOT / "README.md").read_text())
    listed = re.search(r"measures sections alone, one archive for all of them \(([^;]*);", flat)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(ON_DEFAULT_ARCHIVE)
