"""``ImageSet``: images held in memory with how to normalise and augment them; the datasets' statistics."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# Per-channel mean/std in [0, 1] units, as GDAS and NAS-Bench-201 use them.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """Images in memory with what is needed to normalise and augment them.

    Attributes:
        images: uint8 ``[N, C, H, W]``.
        labels: int64 ``[N]``.
        num_classes: Number of classes.
        mean, std: Per-channel statistics in [0, 1] units.
        scale: Pixel value that maps to 1.0 (255 for photos, 16 for the digits).
        pad: Random-crop padding in pixels (0: no crop).
        flip: Random horizontal flips.
        source: Where the images come from, in words (logged, and written to ``final.json``
            for the test set).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    scale: float = 255.0
    pad: int = 4
    flip: bool = True
    source: str = ""

    def subset(self, index: torch.Tensor) -> "ImageSet":
        """The same set restricted to ``index``."""
        return replace(self, images=self.images[index], labels=self.labels[index])

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.labels.numel()
