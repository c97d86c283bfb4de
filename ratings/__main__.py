"""`python -m ratings FILE`: see ratings.cli."""

import sys

from .cli import main

sys.exit(main())
