"""Start and stop TorchServe for deepfake-serve, and report ready only when it really is.

    python -m scripts.operations.serve start --model deepfake     # make start
    python -m scripts.operations.serve stop                       # make stop

Why not plain ``torchserve --start``: it exits 0 even when its port is taken, ``/ping`` says
Healthy while workers crash-loop, and it scatters logs, key_file.json and its pid file over the
working directory and $TMPDIR. Here every runtime file goes under one folder (``runtime/``),
ports are checked before starting, and "ready" means each model's worker is READY on the
management API.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from deepfake_contract import DEFAULT_MODEL
from scripts.operations.torchserve import (
    DEFAULT_CONFIG,
    DEFAULT_RUNTIME,
    DEFAULT_STORE,
    ServeError,
    TorchServe,
    ensure_java,
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "restart", "stop", "status", "java"])
    parser.add_argument("--model", action="append", default=[], help="name[=archive.mar] (default deepfake)")
    parser.add_argument("--runtime-dir", type=Path, default=DEFAULT_RUNTIME)
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for READY workers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (m, f"{m}.mar") for m in args.model or [DEFAULT_MODEL])
    server = TorchServe(args.runtime_dir, args.model_store, models, args.config)
    try:
        if args.action == "start":
            server.start(args.timeout)
            print(f"TorchServe ready: {', '.join(models)} READY")
            print(f"  inference  {server.inference_url}/predictions/<model>")
            print(f"  management {server.management_url}/models")
            print(f"  metrics    {server.metrics_url}/metrics")
            print(f"  keys       {server.key_file}  (send 'Authorization: Bearer <inference key>')")
            print(f"  logs       {server.log_dir}")
        elif args.action == "java":
            home = ensure_java()
            print(f"Java for TorchServe: {Path(home) / 'bin' / 'java' if home else shutil.which('java')}")
        elif args.action == "restart":  # make run: stop and start, unless it already serves these archives
            if server.serves_current():
                print(f"TorchServe already serves {', '.join(models)} as built (unchanged since it started): kept")
            else:
                server.stop()
                server.start(args.timeout)
                print(f"TorchServe ready: {', '.join(models)} READY")
        elif args.action == "stop":
            print("TorchServe stopped" if server.stop() else "TorchServe was not running")
        else:
            pid = server.pid()
            print(f"TorchServe running (pid {pid})" if pid else "TorchServe not running")
            return 0 if pid else 3
    except ServeError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"serve: torchserve exited with {exc.returncode}; see {server.log_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
