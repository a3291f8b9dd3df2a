"""Section 15: the frontend's JIT compiler, from a fresh start.

TorchServe's frontend is a JVM. With the JVM's default tiers, its C2 compiler keeps compiling the
request path (Netty, the batch aggregator, the worker's socket) for the first several thousand requests
after every start, on the cores the worker infers on. config.properties stops the JIT at C1 code
(``vmargs``). Measured side by side: both configurations served at once from a fresh start on one
archive, then the crowd in turn, round by round, so that a round of each shows the same point after
start; each round's images/s and the frontend's CPU per request.
"""

from __future__ import annotations

import contextlib
import re
import statistics
from pathlib import Path
from typing import Any

from scripts.bench.benchmark.harness import CONCURRENCY, load, rss_mb, serving
from scripts.operations.precision import DEFAULT_PRECISION
from scripts.operations.torchserve import DEFAULT_CONFIG, Ports, render_config

VMARGS = re.compile(r"^vmargs=(.*)$\n?", re.MULTILINE)
JVM_DEFAULT, PROJECT = "jvm_default", "project"
CONFIGS = {JVM_DEFAULT: "the JVM's default tiers (C1, then C2)", PROJECT: "config.properties' `vmargs`"}
NO_SLOWER = 0.97  # settled, the project's frontend serves at least this share of the JVM default's rate


def project_vmargs(config: Path = DEFAULT_CONFIG) -> str:
    """The frontend's JVM options config.properties sets (empty: the JVM's defaults)."""
    match = VMARGS.search(config.read_text())
    return match.group(1).strip() if match else ""


def config_files(workdir: Path, config: Path = DEFAULT_CONFIG) -> dict[str, Path]:
    """The project's configuration as is, and the same without its ``vmargs`` (the JVM's default tiers), written
    in ``workdir`` (its relative paths made absolute from the template's folder; each server sets its ports)."""
    template = config.read_text()
    text = render_config(template, Ports.from_config(template), config.parent)
    files = {JVM_DEFAULT: workdir / "jvm_default.properties", PROJECT: workdir / "project.properties"}
    files[JVM_DEFAULT].write_text(VMARGS.sub("", text))
    files[PROJECT].write_text(text)
    return files


def _round(measured: dict[str, Any]) -> dict[str, float]:
    frontend = measured["cores"]["frontend"]
    return {
        "images_per_s": measured["images_per_s"],
        "frontend_ms_per_request": frontend / (measured["images_per_s"] / measured["per_request"]) * 1e3,
        "frontend_cores": frontend,
        "worker_cores": measured["cores"]["worker"],
    }


def frontend_jit(archive: Path, payloads: list[bytes], workdir: Path, rounds: int, per_round: int) -> dict[str, Any]:
    """Both configurations served at once from a fresh start, then ``rounds`` crowds of ``per_round`` frames
    (one per request) on each in turn."""
    files = config_files(workdir)
    results: dict[str, Any] = {"vmargs": project_vmargs(), "per_round": per_round, "configs": {}}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, config in files.items():
            ts, ready_s = stack.enter_context(serving(archive, workdir / f"ts_{name}", config))
            servers[name] = ts
            results["configs"][name] = {"ready_s": ready_s, "rounds": []}
        for index in range(rounds):
            for name, ts in servers.items():
                measured = load(ts, payloads, CONCURRENCY, per_round, warm_up=index == 0)
                results["configs"][name]["rounds"].append(_round(measured))
        for name, ts in servers.items():
            results["configs"][name]["java_rss_mb"] = rss_mb(ts, "frontend")
    return results


def _mean(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.mean(r[key] for r in rounds)


def jit_summary(j: dict[str, Any]) -> dict[str, float]:
    """The project's rate over the JVM default's, in the first half of the rounds (the JIT warming up) and
    in the second (settling), and whether the figures keep the configuration (``kept``)."""
    default, project = (j["configs"][name]["rounds"] for name in (JVM_DEFAULT, PROJECT))
    half = max(1, len(default) // 2)
    early = _mean(project[:half], "images_per_s") / _mean(default[:half], "images_per_s")
    late = _mean(project[half:] or project, "images_per_s") / _mean(default[half:] or default, "images_per_s")
    return {"early": early, "late": late, "half": half, "kept": early >= 1.0 and late >= NO_SLOWER}


def jit_markdown(j: dict[str, Any]) -> str:
    """Section 15 of the report: each round's rate and frontend CPU per request, both configurations."""
    default, project = (j["configs"][name] for name in (JVM_DEFAULT, PROJECT))
    lines = [
        f"## 15. The frontend's JIT compiler, from a fresh start ({DEFAULT_PRECISION}, one frame per request)",
        "",
        f"Both served at once from a fresh start, then (after {2 * CONCURRENCY} requests of warm-up each) "
        f"{CONCURRENCY} concurrent clients sending {j['per_round']} frames to each in turn, round by round. The "
        "frontend's CPU per request is Java's CPU time over the round's requests. config.properties' "
        f"`vmargs={j['vmargs'] or '(none)'}`.",
        "",
        f"| requests measured since start | {CONFIGS[JVM_DEFAULT]}: images/s | frontend CPU ms per request | "
        f"{CONFIGS[PROJECT]}: images/s | frontend CPU ms per request |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index, (a, b) in enumerate(zip(default["rounds"], project["rounds"], strict=True)):
        lines.append(
            f"| {(index + 1) * j['per_round']} | {a['images_per_s']:.1f} | {a['frontend_ms_per_request']:.2f} | "
            f"{b['images_per_s']:.1f} | {b['frontend_ms_per_request']:.2f} |"
        )
    s = jit_summary(j)
    lines += [
        "",
        f"config.properties' frontend / the JVM default's images/s: {s['early']:.2f}x over the first "
        f"{s['half']} rounds, {s['late']:.2f}x over the rest; worker READY {project['ready_s']:.1f} s against "
        f"{default['ready_s']:.1f} s after start; the frontend's memory {project['java_rss_mb']:.0f} MB against "
        f"{default['java_rss_mb']:.0f} MB: "
        + (
            f"kept (as fast from the start, and settled at least {NO_SLOWER:.0%} of the default's rate)."
            if s["kept"]
            else f"these figures do not support it (as fast from the start, and settled at least {NO_SLOWER:.0%} of "
            "the default's rate, would): remove `vmargs` from config.properties."
        ),
    ]
    return "\n".join(lines)
