"""Sampling architectures: Gumbel draws and temperature schedules, estimators of the logit gradient,
the logits and their samples, SDARTS-RS."""
from .gumbel import gumbel_softmax, gumbel_softmax_sample, sample_gumbel, tau_at, TAU_SCHEDULES
from .estimators import ESTIMATORS, estimate, register_estimator
from .architecture import MODES, Architecture, ArchSample

__all__ = ["gumbel_softmax", "gumbel_softmax_sample", "sample_gumbel", "tau_at", "TAU_SCHEDULES", "ESTIMATORS",
           "estimate", "register_estimator", "MODES", "Architecture", "ArchSample"]
