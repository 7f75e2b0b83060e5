"""Batch data: landing-folder scan, reading, the dataset contract, quarantine, training sets,
and the replay (`ct simulate`) that feeds the landing folder and a served model's traffic.

Plain Python and pandas; the Dagster layer (`ct_platform.defs`) calls into this package.
"""
