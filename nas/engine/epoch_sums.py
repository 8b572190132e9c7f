"""An epoch's running sums: on the device during the epoch, carried through a mid-epoch checkpoint.

Both loops (search and retraining) add each step's loss and correct predictions
here without synchronising; a checkpoint taken mid-epoch stores ``partial()``
and a resumed epoch starts from it, so its metrics equal an uninterrupted run's.
"""
from __future__ import annotations

import time

import torch

from .distributed import DistContext, all_reduce_sum


class EpochSums:
    """Device sums and host counts of one epoch.

    Args:
        sums: Names of the float sums kept on the device (e.g. ``loss`` x images, ``correct``).
        counts: Names of integer counts kept on the host (e.g. ``seen`` images, ``skipped`` steps).
        device: Where the sums live.
        partial: ``partial()`` of an interrupted epoch (from its checkpoint), or None for a fresh epoch.
    """

    def __init__(self, sums: tuple[str, ...], counts: tuple[str, ...], device: torch.device,
                 partial: dict | None = None):
        partial = partial or {}
        self.sums = {k: torch.tensor(float(partial.get(k, 0.0)), device=device) for k in sums}
        self.counts = {k: partial.get(k, 0) for k in counts}
        self.device = device
        self._elapsed_before = partial.get("elapsed", 0.0)
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds of this epoch so far, the interrupted part included."""
        return self._elapsed_before + time.perf_counter() - self._started

    def partial(self) -> dict:
        """Plain numbers for the checkpoint (one synchronisation)."""
        return {**{k: v.item() for k, v in self.sums.items()}, **self.counts, "elapsed": self.elapsed()}

    def totals(self, dist: DistContext | None = None, summed_counts: tuple[str, ...] = ()) -> tuple[dict, dict]:
        """The epoch's sums and counts, as host numbers.

        Args:
            dist: Under torchrun the sums (and ``summed_counts``) are added over the ranks.
            summed_counts: The counts that differ per rank (images seen); the others are the same
                on every rank already (e.g. skip decisions, agreed across ranks) and are kept.
        """
        counts = dict(self.counts)
        if dist is not None and dist.enabled:
            reduced = all_reduce_sum(torch.stack([*self.sums.values(),
                                                  *(torch.tensor(float(counts[k]), device=self.device)
                                                    for k in summed_counts)]))
            sums = dict(zip(self.sums, reduced[:len(self.sums)].tolist()))
            counts.update({k: int(v) for k, v in zip(summed_counts, reduced[len(self.sums):].tolist())})
            return sums, counts
        return {k: v.item() for k, v in self.sums.items()}, counts
