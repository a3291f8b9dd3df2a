"""KServe's own model server in front of a TorchServe: the request path inside a KServe predictor pod.

    python -m tests.kserve_front --http_port 8080 --predictor_host 127.0.0.1:8085 --model_name deepfake

KServe's TorchServe image runs the kserve SDK's ModelServer on port 8080 and forwards Open Inference
Protocol requests to TorchServe. This runs that same ModelServer (no stand-in): readiness on
/v2/health/ready and /v2/models/<model>/ready, inference forwarded over the v2 REST protocol, the
answer parsed by KServe and sent on. The arguments are the ModelServer's own (kserve.model_server).
"""

from __future__ import annotations

from kserve import Model, ModelServer
from kserve.model import PredictorConfig
from kserve.model_server import parser


class TorchServePredictor(Model):
    """Forwards every request to TorchServe over v2 REST (KServe's predictor_host mechanism)."""

    def __init__(self, name: str, predictor_host: str):
        super().__init__(name, PredictorConfig(predictor_host, "v2"))
        self.ready = True


if __name__ == "__main__":
    args, _ = parser.parse_known_args()
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=False, workers=1)
    server.start([TorchServePredictor(args.model_name, args.predictor_host)])
