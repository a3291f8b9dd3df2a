"""deepfake_client.web: the original app's upload page over DeepfakeClient (``make web``)."""

from deepfake_client.web.app import (
    DEFAULT_HOST,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_PORT,
    WebConfig,
    create_app,
    create_server,
)

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_PORT", "WebConfig", "create_app", "create_server"]
