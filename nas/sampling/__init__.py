"""Sampling architectures: Gumbel draws and temperature schedules, the logits and their samples, SDARTS-RS."""
from .gumbel import gumbel_softmax, gumbel_softmax_sample, sample_gumbel, tau_at, TAU_SCHEDULES
from .architecture import MODES, Architecture, ArchSample

__all__ = ["gumbel_softmax", "gumbel_softmax_sample", "sample_gumbel", "tau_at", "TAU_SCHEDULES", "MODES", "Architecture", "ArchSample"]
