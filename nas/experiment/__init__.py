"""Searched against random cells under one retraining budget: ``python -m nas.experiment``."""
from .experiment import main, percentile_among, run_experiment, summarize

__all__ = ["main", "percentile_among", "run_experiment", "summarize"]
