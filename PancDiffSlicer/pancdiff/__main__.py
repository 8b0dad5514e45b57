"""``python -m pancdiff``: the same as the ``pancdiff`` command."""

import sys

from .cli import main

sys.exit(main())
