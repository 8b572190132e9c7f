"""``SearchData``: the search's weight-step, arch-step and evaluation loaders over one training set."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .image_set import ImageSet
from .splits import split_indices
from .tensor_loader import TensorLoader

@dataclass
class SearchData:
    """What the search loop reads: weight-step batches, arch-step batches, and an eval pass over val."""

    train: TensorLoader
    val: TensorLoader
    val_eval: TensorLoader
    num_classes: int
    in_channels: int
    image_size: int


def build_search_data(data: ImageSet, split: float, batch_size: int, augment: bool = True, seed: int = 0,
                      device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> SearchData:
    """Splits the training set into weight and architecture halves and wraps each in a loader.

    ``batch_size`` is the global batch; with ``world_size`` ranks each gets a shard of it.
    """
    train_idx, val_idx = split_indices(len(data), split, seed)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)
    shard = dict(device=device, rank=rank, world_size=world_size)
    return SearchData(
        train=TensorLoader(train_set, batch_size, shuffle=True, augment=augment, seed=seed, **shard),
        # Arch steps see the val images with the training transform, as GDAS does.
        val=TensorLoader(val_set, batch_size, shuffle=True, augment=augment, seed=seed + 1, **shard),
        val_eval=TensorLoader(val_set, max(batch_size, 256), shuffle=False, augment=False, drop_last=False, **shard),
        num_classes=data.num_classes, in_channels=data.images.shape[1], image_size=data.images.shape[-1])
