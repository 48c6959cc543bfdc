"""clearsim's discrete-event engine: arrivals, replicas, allocation timing, metrics, runner and CLI.

The public Python API mirrors the CLI: ``clearsim run`` is :func:`sim.experiments.runner.run`, and so on.
"""

__version__ = "0.1.0"
