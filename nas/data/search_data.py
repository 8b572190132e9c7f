"""``SearchData``: the search's weight-step, arch-step and evaluation loaders over one training set."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .file_set import FileSet
from .image_set import ImageSet
from .loader_choice import make_loader
from .splits import split_indices
from .streaming import StreamLoader
from .tensor_loader import TensorLoader

@dataclass
class SearchData:
    """What the search loop reads: weight-step batches, arch-step batches, and an eval pass over val."""

    train: TensorLoader | StreamLoader
    val: TensorLoader | StreamLoader
    val_eval: TensorLoader | StreamLoader
    num_classes: int
    in_channels: int
    image_size: int


def build_search_data(data: ImageSet | FileSet, split: float, batch_size: int, augment: bool = True, seed: int = 0,
                      device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> SearchData:
    """Splits the training set into weight and architecture halves and wraps each in a loader.

    ``batch_size`` is the global batch; with ``world_size`` ranks each gets a shard of it.
    An ``ImageSet`` is batched in memory (``TensorLoader``), a ``FileSet`` streamed from disk (``StreamLoader``).
    """
    train_idx, val_idx = split_indices(len(data), split, seed)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)
    shard = dict(device=device, rank=rank, world_size=world_size)
    return SearchData(
        train=make_loader(train_set, batch_size, shuffle=True, augment=augment, seed=seed, **shard),
        # Arch steps see the val images with the training transform, as GDAS does.
        val=make_loader(val_set, batch_size, shuffle=True, augment=augment, seed=seed + 1, **shard),
        val_eval=make_loader(val_set, max(batch_size, 256), shuffle=False, augment=False, drop_last=False, **shard),
        num_classes=data.num_classes, in_channels=data.image_shape[0], image_size=data.image_shape[-1])
