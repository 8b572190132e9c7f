"""Loss and accuracy of a classifier over a loader: the one evaluation the search and retraining share.

Sums stay on the device (no synchronisation per batch), are added across ranks
under torchrun (each rank saw its shard), and are read once at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .distributed import DistContext, all_reduce_sum


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_classifier`` measured.

    Attributes:
        loss: Mean cross-entropy.
        top1: Top-1 accuracy (%).
        top5: Top-5 accuracy (%) (top-k with k = the number of classes when there are fewer than 5).
        images: How many images were evaluated (over every rank).
    """

    loss: float
    top1: float
    top5: float
    images: int


@torch.no_grad()
def evaluate_classifier(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, device: torch.device,
                        dist: DistContext | None = None, amp: bool = False) -> Evaluation:
    """Runs ``forward`` over ``batches`` and returns the mean loss and the accuracies.

    Args:
        forward: Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``; the caller sets eval/train mode.
        batches: ``(images, labels)`` pairs on ``device`` (e.g. ``loader.epoch(0)``).
        device: Where the sums live.
        dist: Under torchrun the sums are added over the ranks.
        amp: Runs ``forward`` under bf16 autocast (the loss and accuracies are computed in float32).
    """
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward(x)                                   # [B, num_classes]
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        top1 += (logits.argmax(1) == y).sum()
        k = min(5, logits.shape[1])
        top5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum()  # [B] -> count
        n += y.numel()
    totals = torch.stack([loss_sum, top1.to(loss_sum.dtype), top5.to(loss_sum.dtype),
                          torch.tensor(float(n), device=device)])
    if dist is not None and dist.enabled:
        all_reduce_sum(totals)
    loss_sum, correct1, correct5, n = totals.tolist()  # the one synchronisation
    return Evaluation(loss_sum / n, 100.0 * correct1 / n, 100.0 * correct5 / n, int(n))
