"""Image folders decoded whole into memory (the ``memory`` loader of ``imagefolder``)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..utils.errors import UserError
from .image_set import IMAGENET_MEAN, IMAGENET_STD, ImageSet
from .listing import _list_images
from .splits import TEST_SPLIT_SEED, hold_out

def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def _decode(path: str, image_size: int) -> tuple[torch.Tensor | None, str | None]:
    """Reads one image as uint8 ``[3, image_size, image_size]``; ``(None, reason)`` if it cannot be read."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: a bomb all the same.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                rgb = img.convert("RGB")  # decodes the whole file: truncated data fails here
        resized = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return TF.pil_to_tensor(resized), None
    except Exception as e:  # whatever the decoder raises, the cause is this file
        return None, _one_line(e)


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


def _notes(skipped: int, loops: list) -> str:
    notes = [f", {skipped} unreadable image(s) skipped"] if skipped else []
    if loops:
        notes.append(f", {len(loops)} looping folder link(s) not followed ({loops[0]}"
                     f"{', ...' if len(loops) > 1 else ''})")
    return "".join(notes)


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
        paths, labels = chosen.paths, chosen.labels
        where = f"{root / 'train'}" if train else f"{evaluation}"
    else:
        chosen = listing = _list_images(root)
        if not 0 < test_split < 1:
            raise UserError(f"data.test_split must be in (0, 1) for a flat image folder, got {test_split}")
        kept, held = hold_out(listing.labels, test_split)
        if len(held) == 0 or len(kept) == 0:
            raise UserError(f"data.test_split={test_split} of the {len(listing.paths)} images in {str(root)!r} "
                            "leaves an empty training or test set; change data.test_split, add images, "
                            "or give train/ and val/ folders")
        index = kept if train else held
        paths, labels = [listing.paths[i] for i in index.tolist()], listing.labels[index]
        share = f"{test_split * 100:g}%"
        where = (f"{root} less the held-out {share} test split" if train else
                 f"held out {share} of {root} (stratified by class, split seed {TEST_SPLIT_SEED})")
    images, kept_files, skipped = _decode_all(paths, image_size, num_workers, skip_bad_images)
    labels = labels[kept_files]
    if train:
        present = set(labels.unique().tolist())
        empty = [n for i, n in enumerate(listing.classes) if i not in present]
        if empty:
            after = f" after skipping {skipped} unreadable image(s)" if skipped else ""
            raise UserError(f"class(es) {', '.join(empty)} have no training image left in {where}{after}; "
                            "add images (or lower data.test_split) or remove the class folder(s)")
    source = f"{where}: {len(labels):,} images{_notes(skipped, chosen.loops)}"
    return ImageSet(images, labels, len(listing.classes), IMAGENET_MEAN, IMAGENET_STD, pad=image_size // 8,
                    source=source)
