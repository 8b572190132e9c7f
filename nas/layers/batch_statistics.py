"""Evaluating a supernet's architecture with batch statistics in every BN.

A supernet's BN running statistics, where its layout keeps any (the official
NB201 and DARTS layouts keep them in the stem, the reductions and the head, or
everywhere), are averages over the many architectures sampled during the
search; they fit none of them. Evaluated with them, a derived architecture on
the quickstart read anywhere from 8% to 89% from epoch to epoch; evaluated with
the batch's own statistics (what every training step does) it reads what the
network computes. ``batch_statistics`` switches every BN of a module to batch
statistics for the duration of a ``with`` block and leaves its running
statistics exactly as they were.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, every BN of ``module`` normalises with the current batch's statistics.

    Running statistics (and ``num_batches_tracked``) are left untouched: the BNs run in
    training mode with momentum 0, and the counter is restored afterwards. Other
    submodules keep their mode.
    """
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    try:
        for m in norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        yield
    finally:
        for m, (training, momentum, tracked) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
