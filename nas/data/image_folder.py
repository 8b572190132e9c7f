"""Image folders decoded whole into memory (the ``memory`` loader of ``imagefolder``)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..utils.errors import UserError
from .file_set import SelectedFiles, loop_notes, select_files
from .image_set import IMAGENET_MEAN, IMAGENET_STD, ImageSet
from .transforms import _decode

class _ImageFiles(torch.utils.data.Dataset):
    """Decodes image files in DataLoader workers; a file that cannot be read gives its reason, not an exception."""

    def __init__(self, paths: list, image_size: int):
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return _decode(self.paths[i], self.image_size)


def _as_list(batch: list) -> list:
    return batch


def _decode_all(paths: list, image_size: int, num_workers: int, skip_bad: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Decodes ``paths``; returns ``(images [N, 3, S, S], kept [N] indices into paths, skipped)``.

    Raises:
        UserError: for the first file that cannot be read, unless ``skip_bad``.
    """
    loader = torch.utils.data.DataLoader(_ImageFiles(paths, image_size), batch_size=64, num_workers=num_workers,
                                         collate_fn=_as_list)
    images, kept, i = [], [], 0
    for batch in loader:
        for image, reason in batch:
            if image is None and not skip_bad:
                raise UserError(f"cannot read image {paths[i]!r} ({reason}); fix or delete it, or set "
                                "data.skip_bad_images=true to leave out the images that cannot be read")
            if image is not None:
                images.append(image)
                kept.append(i)
            i += 1
    stacked = torch.stack(images) if images else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    return stacked, torch.tensor(kept, dtype=torch.long), len(paths) - len(kept)


def load_imagefolder(root: str | Path, image_size: int = 32, train: bool = True, num_workers: int = 0,
                     test_split: float = 0.1, skip_bad_images: bool = False) -> ImageSet:
    """An ImageFolder tree (``root/<class>/<image>``), resized to ``image_size`` and held in memory.

    With ``root/train`` and ``root/val`` (or ``root/test``), those are the
    training and test sets, and their class folders must match. Otherwise
    ``root`` holds both: a seeded, class-stratified ``test_split`` of its
    images (``hold_out`` with ``TEST_SPLIT_SEED``) is the test set and never
    part of the training set. ``ImageSet.source`` says which.

    Args:
        root: The image folder.
        image_size: Side images are resized to.
        train: The training set, else the test set.
        num_workers: DataLoader processes that decode images.
        test_split: Fraction of a flat folder held out for testing.
        skip_bad_images: Leave out files that cannot be read (counted in
            ``source``) instead of refusing them.

    Raises:
        UserError: a missing folder, a file that cannot be read (unless
            skipped), a class without images, different class folders in
            ``train/`` and ``val/``, or one file in two classes.
    """
    return decode_files(select_files(root, train, test_split), image_size, train, num_workers, skip_bad_images)


def decode_files(files: SelectedFiles, image_size: int = 32, train: bool = True, num_workers: int = 0,
                 skip_bad_images: bool = False) -> ImageSet:
    """The listed files of one side of a folder, decoded into an ``ImageSet`` (see ``load_imagefolder``)."""
    paths, labels, where = files.paths, files.labels, files.where
    images, kept_files, skipped = _decode_all(paths, image_size, num_workers, skip_bad_images)
    labels = labels[kept_files]
    if train:
        present = set(labels.unique().tolist())
        empty = [n for i, n in enumerate(files.classes) if i not in present]
        if empty:
            after = f" after skipping {skipped} unreadable image(s)" if skipped else ""
            raise UserError(f"class(es) {', '.join(empty)} have no training image left in {where}{after}; "
                            "add images (or lower data.test_split) or remove the class folder(s)")
    source = f"{where}: {len(labels):,} images{loop_notes(files.loops, skipped)}"
    return ImageSet(images, labels, len(files.classes), IMAGENET_MEAN, IMAGENET_STD, pad=image_size // 8,
                    source=source)
