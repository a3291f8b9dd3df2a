"""The project's tools, by role; run them from the repository root as ``python -m scripts.<role>.<name>``.

- ``operations``: serve a trained checkpoint (archive, precision, serve, kserve_bundle)
- ``modeling``: train, calibrate and evaluate a checkpoint (data and metrics are their libraries)
- ``demo``: the demo's data and model (make_demo_data, build_demo)
- ``bench``: measure the served model (benchmark, loadtest)
- ``synthetic``: generated media the others draw on (scenes, face clips); no command line

Imports only go down, bench -> demo -> modeling -> operations -> synthetic (any step may be skipped), and
into handler/, the contract and the client's public names (tests/test_layout.py checks it).

Third-party start-up noise that means nothing to a user is kept out of their output (torch's "No CUDA
runtime is found" on a CPU machine, NNCF's INFO lines); ``DEEPFAKE_VERBOSE=1`` shows it again.
"""

import argparse
import logging
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# image files a folder of training, calibration or evaluation images may hold
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

if os.environ.get("DEEPFAKE_VERBOSE", "") in ("", "0"):
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.WARNING)


def options(parser: argparse.ArgumentParser, **values: Any) -> argparse.Namespace:
    """A tool's options as its command line would give them, from keyword values (already of the option's
    type) and the parser's defaults: how one tool calls another's ``run`` without building an argv list."""
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    unknown = set(values) - set(actions)
    if unknown:
        raise TypeError(f"{parser.prog}: no option {', '.join(sorted(unknown))}")
    missing = [a.option_strings[0] for dest, a in actions.items() if a.required and dest not in values]
    if missing:
        raise TypeError(f"{parser.prog}: {', '.join(missing)} required")
    return argparse.Namespace(**{dest: values.get(dest, action.default) for dest, action in actions.items()})
