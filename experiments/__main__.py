"""``python -m experiments``: the ``landscape`` command (see ``experiments.cli``)."""

import sys

from experiments.cli import main

sys.exit(main())
