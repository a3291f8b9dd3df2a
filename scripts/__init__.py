"""Command-line tools: run them from the repository root as ``python -m scripts.<name>``.

Third-party start-up noise that means nothing to a user is kept out of their output (torch's "No CUDA
runtime is found" on a CPU machine, NNCF's INFO lines); ``DEEPFAKE_VERBOSE=1`` shows it again.
"""

import logging
import os

if os.environ.get("DEEPFAKE_VERBOSE", "") in ("", "0"):
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.WARNING)
