"""``python -m scripts.bench.benchmark``: see ``cli``."""

import sys

from scripts.bench.benchmark.cli import main

sys.exit(main())
