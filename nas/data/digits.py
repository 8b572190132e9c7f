"""The bundled UCI handwritten digits (``nas/datasets/digits.bin.gz``)."""
from __future__ import annotations

import gzip
from importlib import resources

import torch

from .image_set import ImageSet

DIGITS_TEST_SIZE = 297  # the bundled digits: 1,500 train / 297 test, fixed split


def load_digits(train: bool = True) -> ImageSet:
    """The bundled UCI handwritten digits (8x8, 1 channel, values 0..16; see ``datasets/DIGITS.md``).

    The 1,797 images are split once, by a fixed permutation, into 1,500 for
    training and 297 for testing.
    """
    raw = gzip.decompress(resources.files("nas.datasets").joinpath("digits.bin.gz").read_bytes())
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 65)
    images, labels = rows[:, :64].reshape(-1, 1, 8, 8).clone(), rows[:, 64].long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    index = order[DIGITS_TEST_SIZE:] if train else order[:DIGITS_TEST_SIZE]
    # Statistics of the whole bundled set in [0, 1] units (pixel / 16).
    mean = (images.float() / 16).mean().item()
    std = (images.float() / 16).std().item()
    # Digits are not mirror-symmetric: shift by up to one pixel, never flip.
    source = ("the bundled digits' training split" if train else "the bundled digits' fixed test split") \
        + f": {len(index):,} images"
    return ImageSet(images[index], labels[index], 10, (mean,), (std,), scale=16.0, pad=1, flip=False, source=source)
