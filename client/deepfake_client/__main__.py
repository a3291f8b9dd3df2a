"""``python -m deepfake_client`` is the ``deepfake-detect`` command."""

import sys

from deepfake_client._cli import main

sys.exit(main())
