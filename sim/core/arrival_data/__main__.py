"""``python -m sim.core.arrival_data ARRIVALS_DIR [OUT_DIR]``: rebuild the embedded arrival traces
(maintainers only; a plain install already ships them)."""

import sys

from sim.core.arrival_data import main

if __name__ == "__main__":
    sys.exit(main())
