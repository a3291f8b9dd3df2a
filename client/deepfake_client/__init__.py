"""deepfake_client: send images and videos to the deepfake-serve TorchServe deployment.

from deepfake_client import DeepfakeClient
with DeepfakeClient() as client:
    print(client.predict_image("face.jpg").label)
    print(client.analyze_video("clip.mp4").summary.verdict)
    overlay(Image.open("face.jpg"), client.explain("face.jpg")).save("why.png")
"""

from deepfake_client._aggregate import AggregationConfig, confident_strategy, find_segments, summarise, top_k_mean
from deepfake_client._client import DeepfakeClient, encode_frame
from deepfake_client._config import ClientConfig, Timeouts, find_key_file, read_key_file
from deepfake_client._exceptions import (
    AuthenticationError,
    BadVideoError,
    CancelledError,
    DeepfakeError,
    InputError,
    InputRejectedError,
    MalformedAnswerError,
    ModelNotFoundError,
    ServerError,
    ServerTimeoutError,
    ServerUnavailableError,
)
from deepfake_client._explain import overlay, save_overlay
from deepfake_client._plot import plot_timeline
from deepfake_client._results import FrameResult, ImageResult, Prediction, Segment, VideoAnalysis, VideoSummary
from deepfake_client._transport import MockTransport, make_response
from deepfake_client._video import SampledFrame, sample_frames
from deepfake_contract import ErrorAnswer, Explanation, Heatmap, ModelMetadata, oip_request, predictions_from_oip

__all__ = [
    "AggregationConfig",
    "AuthenticationError",
    "BadVideoError",
    "CancelledError",
    "ClientConfig",
    "DeepfakeClient",
    "DeepfakeError",
    "ErrorAnswer",
    "Explanation",
    "FrameResult",
    "Heatmap",
    "ImageResult",
    "InputError",
    "InputRejectedError",
    "MalformedAnswerError",
    "MockTransport",
    "ModelMetadata",
    "ModelNotFoundError",
    "Prediction",
    "SampledFrame",
    "Segment",
    "ServerError",
    "ServerTimeoutError",
    "ServerUnavailableError",
    "Timeouts",
    "VideoAnalysis",
    "VideoSummary",
    "confident_strategy",
    "encode_frame",
    "find_key_file",
    "find_segments",
    "make_response",
    "oip_request",
    "overlay",
    "plot_timeline",
    "predictions_from_oip",
    "read_key_file",
    "sample_frames",
    "save_overlay",
    "summarise",
    "top_k_mean",
]
__version__ = "0.1.0"
