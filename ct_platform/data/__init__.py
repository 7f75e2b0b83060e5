"""Batch data: landing-folder scan, reading, the dataset contract, quarantine, training sets.

Plain Python and pandas; the Dagster layer (`ct_platform.defs`) calls into this package.
"""
