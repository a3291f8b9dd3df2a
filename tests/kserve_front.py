"""A KServe predictor pod, here: KServe's own model server in front of a TorchServe started from a bundle
the way KServe's TorchServe runtime starts it (``KServeTorchServe``).

    python -m tests.kserve_front --http_port 8080 --predictor_host 127.0.0.1:8085 --model_name deepfake

KServe's TorchServe image runs the kserve SDK's ModelServer on port 8080 and forwards Open Inference
Protocol requests to TorchServe. This runs that same ModelServer (no stand-in): readiness on
/v2/health/ready and /v2/models/<model>/ready, inference forwarded over the v2 REST protocol, the
answer parsed by KServe and sent on. The arguments are the ModelServer's own (kserve.model_server).
"""

from __future__ import annotations

import sys
from pathlib import Path

from kserve import Model, ModelServer
from kserve.model import PredictorConfig
from kserve.model_server import parser

from scripts.operations.kserve_bundle import KSERVE_ENVIRONMENT, MOUNT, bundle_models
from scripts.operations.torchserve import Ports, TorchServe, render_config


class TorchServePredictor(Model):
    """Forwards every request to TorchServe over v2 REST (KServe's predictor_host mechanism)."""

    def __init__(self, name: str, predictor_host: str):
        super().__init__(name, PredictorConfig(predictor_host, "v2"))
        self.ready = True


class KServeTorchServe(TorchServe):
    """TorchServe started from a bundle exactly as KServe's TorchServe runtime starts it: the same
    command line, the bundle's config and the runtime's environment. Two things differ, because this
    runs outside a pod: the bundle's folder stands for /mnt/models, and the ports are ``ports``."""

    def __init__(self, bundle: Path, runtime_dir: Path, ports: Ports | None = None):
        self.bundle = Path(bundle).resolve()
        super().__init__(
            runtime_dir,
            self.bundle / "model-store",
            bundle_models(self.bundle),
            self.bundle / "config" / "config.properties",
            ports or Ports.free(),
        )

    def rendered_config(self) -> str:
        return render_config(self.config_file.read_text().replace(MOUNT, str(self.bundle)), self.ports)

    def command(self, config: Path) -> list[str]:
        torchserve = Path(sys.executable).with_name("torchserve")
        return [str(torchserve), "--start", f"--model-store={self.model_store}", f"--ts-config={config}"]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **KSERVE_ENVIRONMENT}


if __name__ == "__main__":
    args, _ = parser.parse_known_args()
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=False, workers=1)
    server.start([TorchServePredictor(args.model_name, args.predictor_host)])
