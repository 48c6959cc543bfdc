"""``python -m sim`` is the ``clearsim`` command."""

import sys

from sim.cli import main

sys.exit(main())
