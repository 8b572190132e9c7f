"""``digits_clutter`` and ``digits_clutter_large``: the bundled digits on a cluttered 16x16 canvas."""
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
CLUTTER_LARGE_COPIES = {True: 2, False: 7}  # renderings of each digit: 3,000 train / 2,079 test images
CLUTTER_LARGE_SEED = 2013                    # fixed, and not CLUTTER_SEED: no image repeats digits_clutter's


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


def render_clutter(digits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each 8x8 digit at a random place of a 16x16 canvas over fragments of the others and noise.

    Args:
        digits: float ``[N, 8, 8]`` in pixel units (0..16).
        g: The generator every draw comes from (so a fixed seed gives fixed images).

    Returns:
        uint8 ``[N, 1, 16, 16]``.
    """
    n, side, k = len(digits), CLUTTER_CANVAS, CLUTTER_FRAGMENT_SIZE
    canvas = torch.zeros(n, side, side)
    for _ in range(CLUTTER_FRAGMENTS):
        donor = torch.randint(n, (n,), generator=g)
        fy, fx = torch.randint(8 - k + 1, (2, n), generator=g)
        rows = (fy[:, None] + torch.arange(k))[:, :, None]
        cols = (fx[:, None] + torch.arange(k))[:, None, :]
        top, left = torch.randint(side - k + 1, (2, n), generator=g)
        _paste_max(canvas, digits[donor[:, None, None], rows, cols], top, left)  # fragments [N, k, k]
    top, left = torch.randint(side - 8 + 1, (2, n), generator=g)
    _paste_max(canvas, digits, top, left)  # the digit last, so its strokes are whole
    canvas += CLUTTER_NOISE * torch.rand(canvas.shape, generator=g)
    return canvas.clamp(0, 16).round().to(torch.uint8)[:, None]


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
    g = torch.Generator().manual_seed(CLUTTER_SEED * 2 + (0 if train else 1))
    images = render_clutter(source.images[:, 0].float(), g)
    # Position varies already; a one-pixel shift is enough augmentation, and digits never flip.
    return ImageSet(images, source.labels.clone(), 10, CLUTTER_MEAN, CLUTTER_STD, scale=16.0, pad=1, flip=False,
                    source=source.source.replace("digits'", "digits_clutter's"))


def load_digits_clutter_large(train: bool = True) -> ImageSet:
    """``digits_clutter`` with several renderings of every digit: 3,000 train / 2,079 test images.

    Rendering ``r`` of the split holds every digit of ``load_digits(train)`` once
    (same labels, same order), placed and cluttered as in ``load_digits_clutter``
    (fragments come from digits of the same split only), each rendering from its
    own fixed seed. The test set is large enough that one image is 0.05%; its
    2,079 images come from the 297 test digits (7 renderings each), never from a
    training digit.
    """
    source = load_digits(train)
    digits = source.images[:, 0].float()  # [N, 8, 8]
    renderings = []
    for r in range(CLUTTER_LARGE_COPIES[train]):
        g = torch.Generator().manual_seed(CLUTTER_LARGE_SEED * 100 + r * 2 + (0 if train else 1))
        renderings.append(render_clutter(digits, g))
    images = torch.cat(renderings)
    labels = source.labels.repeat(CLUTTER_LARGE_COPIES[train])
    text = source.source.replace("digits'", "digits_clutter_large's").split(":")[0]
    return ImageSet(images, labels, 10, CLUTTER_MEAN, CLUTTER_STD, scale=16.0, pad=1, flip=False,
                    source=f"{text}: {len(labels):,} images ({CLUTTER_LARGE_COPIES[train]} renderings of each digit)")
