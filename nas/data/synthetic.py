"""A small learnable synthetic set for tests."""
from __future__ import annotations

import torch

from .image_set import ImageSet

def make_synthetic(size: int = 256, num_classes: int = 4, image_size: int = 16, channels: int = 3,
                   seed: int = 0, train: bool = True) -> ImageSet:
    """A small learnable set for tests: one random smooth template per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.nn.functional.interpolate(
        torch.rand(num_classes, channels, 4, 4, generator=g), size=(image_size, image_size), mode="bilinear")
    g.manual_seed(seed + (1 if train else 2))
    labels = torch.randint(num_classes, (size,), generator=g)
    images = templates[labels] + 0.25 * torch.randn(size, channels, image_size, image_size, generator=g)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    source = f"synthetic {'training' if train else 'test'} images (seed {seed}, a draw of their own): {size:,} images"
    return ImageSet(images, labels, num_classes, (0.5,) * channels, (0.25,) * channels, pad=image_size // 8,
                    source=source)
