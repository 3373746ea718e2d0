#!/usr/bin/env python3
"""Benchmark entry point: ``python bench/run.py [options]`` (same as ``python -m cupymla bench``).

Works from a checkout without installing: the repository root is put on ``sys.path``.
See ``python bench/run.py --help`` and DESIGN.md, "Benchmark protocol".
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cupymla.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
