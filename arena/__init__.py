"""Arena: judge language models by anonymous, side-by-side human votes."""

import os

# The ratings fits solve matrices of a few hundred rows: BLAS threads gain nothing there and,
# beside a busy server, made the job two to four times slower (docs/benchmarks.md). Set before
# numpy loads; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
