"""``python -m sim`` is the ``clearsim`` command."""

import sys

from sim.experiments.cli import main

sys.exit(main())
