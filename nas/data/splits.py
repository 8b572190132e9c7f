"""Seeded splits of a training set: the search's weight/arch halves, held-out test and val parts."""
from __future__ import annotations

import torch

from ..utils.errors import UserError

# The held-out test split of a flat image folder is drawn with this seed, never with the run's
# seed, so a search and a retraining of the same folder (any seeds) hold out the same images.
TEST_SPLIT_SEED = 0
# The validation part a retraining holds out of its training set (train.val_split): one seed for
# every run, so that every cell and every retraining seed is measured on the same images.
VAL_SPLIT_SEED = 1


def hold_out(labels: torch.Tensor, fraction: float, seed: int = TEST_SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``range(len(labels))`` into ``(kept, held_out)``, stratified by class.

    ``k = round(len(labels) * fraction)`` items are held out, shared among the
    classes by largest remainder: class ``c`` of ``n_c`` items gives
    ``n_c * k / len(labels)`` rounded up or down (less than one item off), and
    which of its items go is a seeded draw. Both index tensors are sorted.
    """
    n = labels.numel()
    g = torch.Generator().manual_seed(seed)
    k = int(round(n * fraction))
    classes, sizes = labels.unique(return_counts=True)
    quota = sizes.double() * k / max(n, 1)
    share = quota.floor().long()
    # The items left after rounding down go to the largest remainders; ties in a seeded order.
    remainder = quota - share
    order = torch.randperm(len(classes), generator=g)
    order = order[torch.argsort(remainder[order], descending=True, stable=True)]
    share[order[:k - int(share.sum())]] += 1
    held = []
    for c, m in zip(classes.tolist(), share.tolist()):
        members = (labels == c).nonzero().squeeze(1)
        held.append(members[torch.randperm(len(members), generator=g)[:m]])
    mask = torch.zeros(n, dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into ``fraction`` and the rest."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(n * fraction))
    if not 0 < k < n:
        raise UserError(f"data.split={fraction} leaves an empty part of a {n}-image training set")
    return order[:k], order[k:]
