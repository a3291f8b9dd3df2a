"""deepfake_client: send images and videos to the deepfake-serve TorchServe deployment.

from deepfake_client import DeepfakeClient
with DeepfakeClient() as client:
    print(client.predict_image("face.jpg").label)
    print(client.analyze_video("clip.mp4").summary.verdict)
    overlay(Image.open("face.jpg"), client.explain("face.jpg")).save("why.png")
"""

from deepfake_client._aggregate import (
    LIKELY_DEEPFAKE,
    LIKELY_REAL,
    MANIPULATED_SEGMENTS,
    MANIPULATED_THROUGHOUT,
    NO_MANIPULATION,
    NOT_ENOUGH_FRAMES,
    VERDICTS,
    AggregationConfig,
    confident_strategy,
    find_segments,
    summarise,
    sustained_segments,
    top_k_mean,
)
from deepfake_client._client import DeepfakeClient, encode_frame
from deepfake_client._config import (
    DEFAULT_FPS,
    DEFAULT_FRAMES_PER_REQUEST,
    DEFAULT_MANAGEMENT_URL,
    DEFAULT_MODEL,
    DEFAULT_URL,
    ClientConfig,
    Timeouts,
    find_key_file,
    read_key_file,
)
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
from deepfake_client._explain import overlay, peak_point, save_overlay
from deepfake_client._plot import plot_timeline
from deepfake_client._results import (
    FaceTrack,
    FrameResult,
    ImageResult,
    Prediction,
    Segment,
    TrackPoint,
    VideoAnalysis,
    VideoSummary,
)
from deepfake_client._scan import ScanTally, scan
from deepfake_client._transport import Clock, ManualClock, MockTransport, make_response
from deepfake_client._video import SampledFrame, sample_frames
from deepfake_contract import ErrorAnswer, Explanation, Heatmap, ModelMetadata, oip_request, predictions_from_oip

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES_PER_REQUEST",
    "DEFAULT_MANAGEMENT_URL",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "LIKELY_DEEPFAKE",
    "LIKELY_REAL",
    "MANIPULATED_SEGMENTS",
    "MANIPULATED_THROUGHOUT",
    "NOT_ENOUGH_FRAMES",
    "NO_MANIPULATION",
    "VERDICTS",
    "AggregationConfig",
    "AuthenticationError",
    "BadVideoError",
    "CancelledError",
    "ClientConfig",
    "Clock",
    "DeepfakeClient",
    "DeepfakeError",
    "ErrorAnswer",
    "Explanation",
    "FaceTrack",
    "FrameResult",
    "Heatmap",
    "ImageResult",
    "InputError",
    "InputRejectedError",
    "MalformedAnswerError",
    "ManualClock",
    "MockTransport",
    "ModelMetadata",
    "ModelNotFoundError",
    "Prediction",
    "SampledFrame",
    "ScanTally",
    "Segment",
    "ServerError",
    "ServerTimeoutError",
    "ServerUnavailableError",
    "Timeouts",
    "TrackPoint",
    "VideoAnalysis",
    "VideoSummary",
    "confident_strategy",
    "encode_frame",
    "find_key_file",
    "find_segments",
    "make_response",
    "oip_request",
    "overlay",
    "peak_point",
    "plot_timeline",
    "predictions_from_oip",
    "read_key_file",
    "sample_frames",
    "save_overlay",
    "scan",
    "summarise",
    "sustained_segments",
    "top_k_mean",
]
__version__ = "0.1.0"
