"""Readiness of the TorchServe in this pod: exit 0 only when every model has workers, all READY.

    python readiness.py [--url http://127.0.0.1:8085] [MODEL ...]     (default: every registered model)

The InferenceService's readinessProbe runs it. TorchServe's /ping says Healthy while workers
crash-loop, and KServe's model server checks the worker state once, at start; this checks it on
every probe, so a replica whose worker is down or restarting gets no traffic. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8085"  # management_address in deploy/kserve/config.properties


def get(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def not_ready(url: str, models: list[str], timeout: float) -> list[str]:
    """Why the pod is not ready (empty when it is)."""
    try:
        if not models:
            models = [entry["modelName"] for entry in get(f"{url}/models", timeout)["models"]]
        if not models:
            return ["no model registered"]
        problems = []
        for model in models:
            statuses = [worker.get("status", "?") for worker in get(f"{url}/models/{model}", timeout)[0]["workers"]]
            if not statuses or any(status != "READY" for status in statuses):
                problems.append(f"{model}: workers {', '.join(statuses) or 'none'}")
        return problems
    except urllib.error.HTTPError as exc:
        return [f"{exc.url}: HTTP {exc.code}"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return [f"cannot read worker states from {url}: {exc}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="models that must be READY (default: every registered one)")
    parser.add_argument("--url", default=DEFAULT_URL, help="TorchServe's management API (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    args = parser.parse_args(argv)
    problems = not_ready(args.url.rstrip("/"), args.models, args.timeout)
    print("; ".join(problems) if problems else "ready", file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
