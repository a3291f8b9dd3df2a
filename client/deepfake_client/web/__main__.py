"""deepfake-web [--port 8000] (or python -m deepfake_client.web): the upload page, served by waitress on
127.0.0.1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deepfake_client._config import (
    DEFAULT_MANAGEMENT_URL,
    DEFAULT_MODEL,
    DEFAULT_URL,
    ClientConfig,
    add_verbosity,
    show_client_log,
)
from deepfake_client.web.app import (
    DEFAULT_HOST,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_MAX_VIDEO_MINUTES,
    DEFAULT_PORT,
    LOOPBACK_HOSTS,
    WebConfig,
    create_server,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfake-web", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s: this machine)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument("--url", help=f"TorchServe inference API (env DEEPFAKE_URL; default {DEFAULT_URL})")
    parser.add_argument(
        "--management-url",
        help=f"TorchServe management API (env DEEPFAKE_MANAGEMENT_URL; default {DEFAULT_MANAGEMENT_URL})",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--key-file", help="TorchServe key_file.json (default: ./runtime/key_file.json)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="default %(default)s")
    parser.add_argument(
        "--max-video-minutes",
        type=float,
        default=DEFAULT_MAX_VIDEO_MINUTES,
        help="longer videos are refused (default %(default)s)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="a further Host name the page answers to, e.g. the name of a reverse proxy in front of it "
        "(repeatable; always answered: 127.0.0.1, localhost and [::1] on the page's port)",
    )
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    show_client_log(args.verbose, "deepfake-web")
    client = ClientConfig.from_env(
        base_url=args.url, management_url=args.management_url, model=args.model, key_file=args.key_file
    )
    hosts = (*(f"{name}:{args.port}" for name in LOOPBACK_HOSTS), f"{args.host}:{args.port}", *args.allowed_host)
    config = WebConfig(
        client=client,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_video_seconds=args.max_video_minutes * 60,
        allowed_hosts=tuple(dict.fromkeys(hosts)),
    )
    server = create_server(config, host=args.host, port=args.port)
    print(f"deepfake-serve web page on http://{args.host}:{args.port}/ (TorchServe at {client.base_url})", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
