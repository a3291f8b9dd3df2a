"""The deepfake_* metrics a worker reports for each batch, through TorchServe's metrics API.

Declared in ``handler/metrics.yaml`` (the archive carries it; config.properties points
``metrics_config`` at it), which is what makes TorchServe's frontend publish them on ``/metrics``.
A worker reports them as log lines; nothing here blocks or fails a request.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deepfake_contract import ErrorAnswer, Prediction
from handler.service import BatchTiming

logger = logging.getLogger(__name__)

METRICS_FILE = Path(__file__).with_name("metrics.yaml")
PREDICTIONS = "deepfake_predictions_total"
REJECTED = "deepfake_rejected_images_total"
PREPROCESS_S = "deepfake_preprocess_seconds_total"
INFERENCE_S = "deepfake_inference_seconds_total"
BATCH_SIZE = "deepfake_batch_size"
FAKE_PROBABILITY = "deepfake_fake_probability"


def declared_metrics(path: Path = METRICS_FILE) -> dict[str, tuple[str, str, list[str]]]:
    """The deepfake_* metrics metrics.yaml declares: name -> (TorchServe metric type, unit, dimensions)."""
    sections = yaml.safe_load(path.read_text())["model_metrics"]
    return {
        metric["name"]: (kind.upper(), metric["unit"], list(metric["dimensions"]))
        for kind, metrics in sections.items()
        for metric in metrics
        if metric["name"].startswith("deepfake_")
    }


DECLARED = declared_metrics()


class Telemetry:
    """Reports one batch's metrics to a TorchServe metrics cache (``context.metrics``)."""

    def __init__(self, cache: Any, model_name: str):
        from ts.metrics.metric_type_enum import MetricTypes  # TorchServe's; only this adapter needs it

        self.model_name = model_name
        self.metrics = {}
        for name in (PREDICTIONS, REJECTED, PREPROCESS_S, INFERENCE_S, BATCH_SIZE, FAKE_PROBABILITY):
            kind, unit, dimensions = DECLARED[name]
            metric_type = MetricTypes[kind]
            try:
                self.metrics[name] = cache.get_metric(name, metric_type)
            except Exception:  # the server runs another metrics file: declare it here (its frontend drops it)
                self.metrics[name] = cache.add_metric_to_cache(name, unit, dimensions, metric_type)

    def _add(self, name: str, value: float, *dimensions: str) -> None:
        self.metrics[name].add_or_update(value, [self.model_name, *dimensions])

    def record_batch(self, timing: BatchTiming | None, results: Sequence[Prediction | ErrorAnswer]) -> None:
        try:
            if timing is not None and timing.size:
                self._add(BATCH_SIZE, timing.size)
                self._add(PREPROCESS_S, round(timing.decode_ms / 1e3, 6))
                self._add(INFERENCE_S, round(timing.inference_ms / 1e3, 6))
            labels: Counter[str] = Counter()
            errors: Counter[str] = Counter()
            for result in results:
                if isinstance(result, ErrorAnswer):
                    errors[result.type] += 1
                else:
                    labels[result.label] += 1
                    self._add(FAKE_PROBABILITY, result.fake_probability)
            for label, count in labels.items():
                self._add(PREDICTIONS, count, label)
            for error_type, count in errors.items():
                self._add(REJECTED, count, error_type)
        except Exception:  # metrics must never fail a batch
            logger.exception("could not report deepfake_* metrics")
