"""The simulation core: engine and step models, arrivals, the workload, allocation
timing, early exit, metrics.  Stands on sim.foundation, traces and policies (layer 3).
"""
