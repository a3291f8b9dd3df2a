"""deploy/: the InferenceService validated offline with KServe's SDK, the container recipe, the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client.models
import yaml

from handler.telemetry import DECLARED
from scripts.operations.kserve_bundle import CONFIG_TEMPLATE, MOUNT

TIER = "unit"

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
MANIFEST = DEPLOY / "kserve" / "inferenceservice.yaml"
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object, "datetime": str}


def schema_problems(data: Any, type_name: str, path: str = "") -> list[str]:
    """Where ``data`` does not fit the SDK's type ``type_name``: unknown fields, wrong types, at any depth.

    KServe's SDK (and the Kubernetes client it uses for pods' fields) declares every field of an
    InferenceService with its type; a misspelt or misplaced field is what kubectl would reject.
    """
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(data, list):
            return [f"{path}: expected a list, got {type(data).__name__}"]
        return [p for i, item in enumerate(data) for p in schema_problems(item, match.group(1), f"{path}[{i}]")]
    if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping, got {type(data).__name__}"]
        inner = match.group(1) or match.group(2)
        return [p for key, value in data.items() for p in schema_problems(value, inner, f"{path}.{key}")]
    if type_name in PRIMITIVES:
        ok = isinstance(data, PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(data, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {data!r}"]
    model = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected a {type_name} object, got {type(data).__name__}"]
    fields = {key: attribute for attribute, key in model.attribute_map.items()}
    problems = [f"{path}.{key}: not a field of {type_name}" for key in data if key not in fields]
    for key, value in data.items():
        if key in fields:
            problems += schema_problems(value, model.openapi_types[fields[key]], f"{path}.{key}")
    return problems


def test_the_schema_check_catches_mistakes():
    good = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "x"}}
    assert schema_problems(good, "V1beta1InferenceService") == []
    typo = {**good, "spec": {"predictor": {"pytorch": {"protocolVersoin": "v2"}}}}
    assert schema_problems(typo, "V1beta1InferenceService") == [
        ".spec.predictor.pytorch.protocolVersoin: not a field of V1beta1TorchServeSpec"
    ]
    wrong_type = {**good, "spec": {"predictor": {"minReplicas": "one"}}}
    assert schema_problems(wrong_type, "V1beta1InferenceService") == [
        ".spec.predictor.minReplicas: expected int, got 'one'"
    ]


def test_inference_service_is_valid_and_serves_the_bundle_over_v2():
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert schema_problems(manifest, "V1beta1InferenceService") == []
    assert (manifest["apiVersion"], manifest["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = manifest["spec"]["predictor"]
    pytorch = predictor["model"]  # the current spec, not the deprecated predictor.pytorch
    assert pytorch["modelFormat"] == {"name": "pytorch"} and "pytorch" not in predictor
    assert pytorch["protocolVersion"] == "v2"
    assert pytorch["resources"]["requests"] == pytorch["resources"]["limits"]
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 16)
    assert predictor["minReplicas"] >= 1 and predictor["maxReplicas"] > predictor["minReplicas"]
    # readiness from the worker state, with the script the image carries
    command = pytorch["readinessProbe"]["exec"]["command"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"COPY deploy/kserve/readiness.py {command[1]}" in dockerfile
    assert command[2] == manifest["metadata"]["name"] == "deepfake"
    # the image the manifest runs is the one the Dockerfile says to build
    assert f"-t {pytorch['image']} ." in dockerfile
    annotations = manifest["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert f"metrics_address=http://0.0.0.0:{annotations['prometheus.io/port']}" in CONFIG_TEMPLATE.read_text()


def test_container_recipe_installs_the_pinned_versions():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    assert f"pytorch/torchserve-kfs:{pins['torchserve']}" in dockerfile  # the TorchServe the tests run
    for pattern in re.findall(r"grep -E '(\^\([^']+\)==)'", dockerfile):
        selected = [name for name in pins if re.match(pattern, f"{name}==")]
        names = pattern[2:-3].split("|")
        assert sorted(selected) == sorted(names), f"{pattern} selects {selected}"
    # the same face detector as make setup installs: the one line of requirements-nodeps.txt
    assert "--no-deps $(grep -E '^facenet-pytorch==' /tmp/deepfake-serve/requirements-nodeps.txt)" in dockerfile
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert ["requirements.txt", "requirements-nodeps.txt"] in copied
    for source in (source for sources in copied for source in sources):
        assert (REPO / source).is_file(), source


def test_kserve_config_keeps_the_handlers_oip_and_batching():
    text = CONFIG_TEMPLATE.read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["enable_envvars_config"] == "false"  # KServe's TS_SERVICE_ENVELOPE=kservev2 is ignored
    assert "service_envelope" not in settings
    assert settings["model_store"] == f"{MOUNT}/model-store"
    assert settings["metrics_config"] == f"{MOUNT}/config/metrics.yaml"
    assert settings["inference_address"].startswith("http://127.0.0.1:")  # only the pod's model server
    assert "model_snapshot" not in settings  # make kserve-bundle adds it from the archive


def test_dashboard_queries_only_declared_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "deepfake-serve.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for expr in exprs for name in re.findall(r"\bdeepfake_\w+", expr)}
    assert used == set(DECLARED)  # every deepfake_* metric has a panel, and no panel reads an undeclared one
    declared = yaml.safe_load((REPO / "handler" / "metrics.yaml").read_text())
    ts_names = {m["name"] for kind in declared["ts_metrics"].values() for m in kind}
    assert {name for expr in exprs for name in re.findall(r"\bts_\w+", expr)} <= ts_names
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
