"""Searched against random cells under one retraining budget: ``python -m nas.experiment``."""
from .experiment import main, run_experiment
from .rank_stats import percentile_among, summarize

__all__ = ["main", "percentile_among", "run_experiment", "summarize"]
