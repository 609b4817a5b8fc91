"""``python -m gateway serve``."""

import sys

from .cli import main

sys.exit(main())
