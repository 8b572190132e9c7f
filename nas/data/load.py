"""``load_dataset``: a dataset by name."""
from __future__ import annotations

from pathlib import Path

from ..utils.errors import UserError
from .cifar import load_cifar
from .digits import load_digits
from .digits_clutter import load_digits_clutter, load_digits_clutter_large
from .image_folder import load_imagefolder
from .image_set import ImageSet
from .synthetic import make_synthetic

def load_dataset(name: str, root: str | Path = "data", train: bool = True, download: bool = False,
                 image_size: int = 32, synthetic_size: int = 256, synthetic_classes: int = 4,
                 seed: int = 0, num_workers: int = 0, test_split: float = 0.1,
                 skip_bad_images: bool = False) -> ImageSet:
    """Loads a dataset by name: ``digits``, ``digits_clutter``, ``digits_clutter_large``, ``cifar10``, ``cifar100``, ``imagefolder`` or ``synthetic``.

    ``test_split`` and ``skip_bad_images`` apply to ``imagefolder`` (see ``load_imagefolder``).
    """
    if name == "digits":
        return load_digits(train)
    if name == "digits_clutter":
        return load_digits_clutter(train)
    if name == "digits_clutter_large":
        return load_digits_clutter_large(train)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, train, download)
    if name == "imagefolder":
        return load_imagefolder(root, image_size, train, num_workers, test_split, skip_bad_images)
    if name == "synthetic":
        return make_synthetic(synthetic_size, synthetic_classes, image_size, seed=seed, train=train)
    raise UserError(f"unknown dataset {name!r}; choose from digits, digits_clutter, digits_clutter_large, cifar10, cifar100, imagefolder, synthetic")
