"""Test-wide settings.

The models under test are tiny, so torch's per-op threading costs more than it
gives, and on a 2-core machine it competes with the subprocesses some tests
start. One intra-op thread keeps the suite fast and its timings steady.
"""
import torch

torch.set_num_threads(1)
