"""``python -m benchmarks [--quick] [--only NAMES]``: every benchmark module, then the summary (see
:mod:`benchmarks.run`)."""

import sys

from benchmarks.run import main

if __name__ == "__main__":
    sys.exit(main())
