"""``FileSet``: an image folder as paths and labels, read from disk batch by batch (the ``stream`` loader).

``select_files`` is the one place that decides which files of a folder are the
training and which the test set (``train/`` + ``val/``, or a seeded held-out
split of a flat folder); the in-memory loader decodes the same list.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..utils.errors import UserError
from .image_set import IMAGENET_MEAN, IMAGENET_STD
from .listing import _list_images
from .splits import TEST_SPLIT_SEED, hold_out


@dataclass
class SelectedFiles:
    """The image files of one side (training or test) of a folder."""

    paths: list
    labels: torch.Tensor
    classes: list
    where: str   # which folder (or which part of it), in words
    loops: list  # directory links not followed


def select_files(root: str | Path, train: bool = True, test_split: float = 0.1) -> SelectedFiles:
    """The training (or test) files of an ImageFolder tree ``root/<class>/<image>``.

    With ``root/train`` and ``root/val`` (or ``root/test``), those are the
    training and test sets, and their class folders must match. Otherwise
    ``root`` holds both: a seeded, class-stratified ``test_split`` of its
    images (``hold_out`` with ``TEST_SPLIT_SEED``) is the test set.

    Raises:
        UserError: a missing folder, a class without images, different class
            folders in ``train/`` and ``val/``, or one file in two classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} does not exist; set data.root to a folder of class subfolders")
    if (root / "train").is_dir():
        evaluation = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
        if evaluation is None:
            raise UserError(f"{str(root)!r} has train/ but no val/ or test/ folder for evaluation")
        listing = _list_images(root / "train")
        # The evaluation folder's classes are checked for the search too: a mismatch is refused up front.
        eval_listing = _list_images(evaluation, classes=listing.classes)
        chosen = listing if train else eval_listing
        where = f"{root / 'train'}" if train else f"{evaluation}"
        return SelectedFiles(chosen.paths, chosen.labels, listing.classes, where, chosen.loops)
    listing = _list_images(root)
    if not 0 < test_split < 1:
        raise UserError(f"data.test_split must be in (0, 1) for a flat image folder, got {test_split}")
    kept, held = hold_out(listing.labels, test_split)
    if len(held) == 0 or len(kept) == 0:
        raise UserError(f"data.test_split={test_split} of the {len(listing.paths)} images in {str(root)!r} "
                        "leaves an empty training or test set; change data.test_split, add images, "
                        "or give train/ and val/ folders")
    index = kept if train else held
    share = f"{test_split * 100:g}%"
    where = (f"{root} less the held-out {share} test split" if train else
             f"held out {share} of {root} (stratified by class, split seed {TEST_SPLIT_SEED})")
    return SelectedFiles([listing.paths[i] for i in index.tolist()], listing.labels[index], listing.classes, where,
                         listing.loops)


def loop_notes(loops: list, skipped: int = 0) -> str:
    """What a listing left out, as a suffix of a set's ``source``."""
    notes = [f", {skipped} unreadable image(s) skipped"] if skipped else []
    if loops:
        notes.append(f", {len(loops)} looping folder link(s) not followed ({loops[0]}"
                     f"{', ...' if len(loops) > 1 else ''})")
    return "".join(notes)


@dataclass
class FileSet:
    """Image files with what is needed to decode, normalise and augment them; the streamed twin of ``ImageSet``.

    Attributes:
        paths: One path per image.
        labels: int64 ``[N]``.
        num_classes: Number of classes.
        image_size: Side of the decoded (``fixed``) or cropped (``timm``) square image.
        transform: ``fixed`` (resize to ``image_size``, then the batch-wise crop/flip of
            ``TensorLoader``, the same pixels as the in-memory loader) or ``timm``
            (``timm.data.create_transform``: random resized crop, flip and colour jitter
            to train; resize and centre crop to evaluate).
        num_workers: DataLoader processes that decode images.
        skip_bad_images: Leave a file that cannot be read out of its batch instead of refusing it.
        mean, std, scale, pad, flip, source: As in ``ImageSet``.
    """

    paths: list
    labels: torch.Tensor
    num_classes: int
    image_size: int
    transform: str = "fixed"
    num_workers: int = 0
    skip_bad_images: bool = False
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    scale: float = 255.0
    pad: int = 4
    flip: bool = True
    source: str = ""

    def subset(self, index: torch.Tensor) -> "FileSet":
        """The same set restricted to ``index``."""
        return replace(self, paths=[self.paths[i] for i in index.tolist()], labels=self.labels[index])

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image as the loader yields it."""
        return (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return self.labels.numel()


def list_imagefolder(root: str | Path, image_size: int = 32, train: bool = True, test_split: float = 0.1,
                     transform: str = "fixed", num_workers: int = 0, skip_bad_images: bool = False) -> FileSet:
    """An ImageFolder tree as a ``FileSet``: listed now, decoded batch by batch while streaming.

    The files are those ``load_imagefolder`` would decode (``select_files``), in
    the same order, so both loaders see the same images under the same indices.
    """
    return file_set_of(select_files(root, train, test_split), image_size, transform, num_workers, skip_bad_images)


def file_set_of(files: SelectedFiles, image_size: int = 32, transform: str = "fixed", num_workers: int = 0,
                skip_bad_images: bool = False) -> FileSet:
    """The listed files of one side of a folder as a ``FileSet`` (see ``list_imagefolder``)."""
    return FileSet(files.paths, files.labels, len(files.classes), image_size, transform=transform,
                   num_workers=num_workers, skip_bad_images=skip_bad_images, pad=image_size // 8,
                   source=f"{files.where}: {len(files.labels):,} images (streamed from disk){loop_notes(files.loops)}")
