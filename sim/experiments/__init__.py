"""The experiment layer: scenarios, the runner, sweeps, executors, plans, calibration,
the report and the CLI.  Stands on everything below (layer 4, the top).
"""
