"""``python -m sim.core.arrival_data ARRIVALS_DIR [OUT_DIR]``: rebuild the embedded arrival traces."""

import sys

from sim.core.arrival_data import build

if len(sys.argv) < 2:
    sys.exit("usage: python -m sim.core.arrival_data PATH/TO/shared/data/arrivals [OUT_DIR]")
for path in build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None):
    print(path)
