"""``digits_clutter``: the bundled digits on a cluttered 16x16 canvas."""
from __future__ import annotations

import torch

from .digits import load_digits
from .image_set import ImageSet

CLUTTER_CANVAS = 16      # digits_clutter: side of the canvas each 8x8 digit is placed on
CLUTTER_FRAGMENTS = 3    # fragments of other digits scattered over each canvas
CLUTTER_FRAGMENT_SIZE = 4
CLUTTER_NOISE = 3.0      # uniform noise amplitude, in pixel units (a stroke is 16)
CLUTTER_SEED = 201       # fixed: the task is the same set of images everywhere
# Per-channel statistics of the digits_clutter training set in [0, 1] units,
# fixed so that train and test are normalised alike without generating both.
CLUTTER_MEAN, CLUTTER_STD = (0.2303,), (0.294,)


def _paste_max(canvas: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> None:
    """Writes ``max(canvas, patch)`` of one patch per image at (top, left), in place.

    Args:
        canvas: float ``[N, H, W]``.
        patches: float ``[N, h, w]``.
        top, left: int64 ``[N]``, the patch's top-left corner on each canvas.
    """
    n, h, w = patches.shape
    rows = (top[:, None] + torch.arange(h))[:, :, None]   # [N, h, 1]
    cols = (left[:, None] + torch.arange(w))[:, None, :]  # [N, 1, w]
    image = torch.arange(n)[:, None, None]
    canvas[image, rows, cols] = torch.maximum(canvas[image, rows, cols], patches)


def load_digits_clutter(train: bool = True) -> ImageSet:
    """The bundled digits on a cluttered 16x16 canvas: a task on which cells really differ.

    Image i is digit i of ``load_digits(train)`` (same split, same label) at a
    random position of a 16x16 canvas, over fragments (4x4 crops) of other
    digits of the same split and uniform noise. The 8x8 digits are nearly
    solved by any cell, since the stem and the residual reduction blocks
    already hold convolutions; finding a digit among look-alike strokes needs
    the cells' own convolutions, so a cell of pooling, skip and ``none`` does
    clearly worse. The generator is seeded by a constant and the split (train
    and test clutter come from disjoint digits), so the sets never change.
    """
    source = load_digits(train)
    digits = source.images[:, 0].float()  # [N, 8, 8]
    n, side = len(source), CLUTTER_CANVAS
    g = torch.Generator().manual_seed(CLUTTER_SEED * 2 + (0 if train else 1))
    canvas = torch.zeros(n, side, side)
    k = CLUTTER_FRAGMENT_SIZE
    for _ in range(CLUTTER_FRAGMENTS):
        donor = torch.randint(n, (n,), generator=g)
        fy, fx = torch.randint(8 - k + 1, (2, n), generator=g)
        rows = (fy[:, None] + torch.arange(k))[:, :, None]
        cols = (fx[:, None] + torch.arange(k))[:, None, :]
        fragments = digits[donor[:, None, None], rows, cols]  # [N, k, k]
        top, left = torch.randint(side - k + 1, (2, n), generator=g)
        _paste_max(canvas, fragments, top, left)
    top, left = torch.randint(side - 8 + 1, (2, n), generator=g)
    _paste_max(canvas, digits, top, left)  # the digit last, so its strokes are whole
    canvas += CLUTTER_NOISE * torch.rand(canvas.shape, generator=g)
    images = canvas.clamp(0, 16).round().to(torch.uint8)[:, None]
    # Position varies already; a one-pixel shift is enough augmentation, and digits never flip.
    return ImageSet(images, source.labels.clone(), 10, CLUTTER_MEAN, CLUTTER_STD, scale=16.0, pad=1, flip=False,
                    source=source.source.replace("digits'", "digits_clutter's"))
