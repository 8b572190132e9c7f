"""Datasets, the search split, and a tensor loader that can live on the GPU.

Every dataset becomes an ``ImageSet``: uint8 images ``[N, C, H, W]`` held in
memory, labels, and how to normalise and augment them. ``TensorLoader`` batches
an ``ImageSet`` on any device, doing random crop and flip on whole batches, so
the search needs no DataLoader workers; the data order of each epoch is a pure
function of (seed, epoch), which makes resumed runs see the same batches.
"""
from __future__ import annotations

import gzip
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Iterator

import torch

from .utils.errors import UserError

# Per-channel mean/std in [0, 1] units, as GDAS and NAS-Bench-201 use them.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DIGITS_TEST_SIZE = 297  # the bundled digits: 1,500 train / 297 test, fixed split


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

    def __len__(self) -> int:
        return self.labels.numel()


# --------------------------------------------------------------------------- loading

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


# ---- digits_clutter_large (one contiguous block: the loader of the larger cluttered task and its renderer)
CLUTTER_LARGE_COPIES = {True: 2, False: 7}  # renderings of each digit: 3,000 train / 2,079 test images
CLUTTER_LARGE_SEED = 2013                    # fixed, and not CLUTTER_SEED: no image repeats digits_clutter's


def _render_clutter(digits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
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
        _paste_max(canvas, digits[donor[:, None, None], rows, cols], top, left)
    top, left = torch.randint(side - 8 + 1, (2, n), generator=g)
    _paste_max(canvas, digits, top, left)  # the digit last, so its strokes are whole
    canvas += CLUTTER_NOISE * torch.rand(canvas.shape, generator=g)
    return canvas.clamp(0, 16).round().to(torch.uint8)[:, None]


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
        renderings.append(_render_clutter(digits, g))
    images = torch.cat(renderings)
    labels = source.labels.repeat(CLUTTER_LARGE_COPIES[train])
    text = source.source.replace("digits'", "digits_clutter_large's").split(":")[0]
    return ImageSet(images, labels, 10, CLUTTER_MEAN, CLUTTER_STD, scale=16.0, pad=1, flip=False,
                    source=f"{text}: {len(labels):,} images ({CLUTTER_LARGE_COPIES[train]} renderings of each digit)")
# ---- end of digits_clutter_large


class _ArrayUnpickler(pickle.Unpickler):
    """Reads CIFAR's python pickles without running code: only numpy arrays and builtins."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(f"cannot read CIFAR file {str(path)!r} ({e}); delete it and set data.download=true") from None


def load_cifar(name: str, root: str | Path, train: bool = True, download: bool = False) -> ImageSet:
    """CIFAR-10 or CIFAR-100 from torchvision's python-pickle folder under ``root``.

    Args:
        name: ``cifar10`` or ``cifar100``.
        root: Folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        train: The 50k training set, else the 10k test set.
        download: Fetch the archive with torchvision first (needs internet).
    """
    root = Path(root)
    if name == "cifar10":
        folder, files = root / "cifar-10-batches-py", ([f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"])
        label_key, num_classes, mean, std, title = "labels", 10, CIFAR10_MEAN, CIFAR10_STD, "CIFAR-10"
    elif name == "cifar100":
        folder, files = root / "cifar-100-python", (["train"] if train else ["test"])
        label_key, num_classes, mean, std, title = "fine_labels", 100, CIFAR100_MEAN, CIFAR100_STD, "CIFAR-100"
    else:
        raise ValueError(f"unknown CIFAR variant {name!r}")
    if download and not all((folder / f).is_file() for f in files):
        import torchvision  # the real download: archive, checksum and extraction are torchvision's
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=train, download=True)
        except Exception as e:  # network or disk errors: one line, not a traceback
            raise UserError(f"could not download {title} into {str(root)!r}: {e}") from None
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{title} not found: looked for {str(folder / missing[0])!r}; set data.download=true "
                        f"to fetch it (needs internet), or data.root=DIR for a folder holding {folder.name}/")
    batches = [_read_cifar_batch(folder / f) for f in files]
    for f, b in zip(files, batches):
        ok = isinstance(b, dict) and "data" in b and label_key in b
        if not ok or getattr(b["data"], "shape", (0, 0))[1:] != (3072,) or len(b["data"]) != len(b[label_key]):
            raise UserError(f"{str(folder / f)!r} is not a {title} batch (expected 'data' [N, 3072] and "
                            f"'{label_key}'); delete {folder} and set data.download=true")
    data = torch.cat([torch.as_tensor(b["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = torch.cat([torch.as_tensor(b[label_key], dtype=torch.long) for b in batches])
    part = "training set" if train else "official test set"
    return ImageSet(data, labels, num_classes, mean, std, source=f"the {title} {part} in {folder}: {len(labels):,} images")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The held-out test split of a flat image folder is drawn with this seed, never with the run's
# seed, so a search and a retraining of the same folder (any seeds) hold out the same images.
TEST_SPLIT_SEED = 0
# The validation part a retraining holds out of its training set (train.val_split): one seed for
# every run, so that every cell and every retraining seed is measured on the same images.
VAL_SPLIT_SEED = 1


@dataclass
class _FileList:
    """What walking an image folder found: one path and label per image file."""

    paths: list
    labels: torch.Tensor
    classes: list
    loops: list  # directory links not followed because they lead back to a folder being walked


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _scandir(folder: str) -> list:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"cannot list folder {folder!r} ({e.strerror}); check its permissions") from None


def _class_dirs(folder: Path) -> list:
    """Sorted ``DirEntry`` of the class folders of ``folder`` (links followed; hidden folders ignored)."""
    return [e for e in _scandir(str(folder)) if not e.name.startswith(".") and e.is_dir()]


def _walk_images(class_dir: str, ancestors: frozenset, files: list, loops: list) -> None:
    """Appends the image files under ``class_dir`` (any depth, sorted) to ``files``.

    Directory links are followed unless they lead to a folder on the current
    path (``ancestors``: device and inode of each): such a link loops, and
    following it would read the same images over and over.
    """
    for e in _scandir(class_dir):
        if e.name.startswith("."):  # .DS_Store, ._x.jpg (AppleDouble), .ipynb_checkpoints: never images
            continue
        try:
            is_dir = e.is_dir()
            key = _key(e.stat()) if is_dir else None
        except OSError:  # a broken link: kept as a file when its name says image, so reading it reports it
            is_dir = False
        if is_dir:
            if key in ancestors:
                loops.append(e.path)
            else:
                _walk_images(e.path, ancestors | {key}, files, loops)
        elif e.name.lower().endswith(IMAGE_EXTENSIONS):
            files.append(e.path)


def _list_images(folder: Path, classes: list | None = None) -> _FileList:
    """Every image file of ``folder/<class>/...`` with its class index.

    Args:
        folder: The folder of class subfolders.
        classes: The class names of the training folder, when ``folder`` is the
            evaluation folder: its class names must be the same.

    Raises:
        UserError: no class folder, a class without images, class names that
            differ from ``classes``, or one file reached from two classes.
    """
    entries = _class_dirs(folder)
    names = [e.name for e in entries]
    if not entries:
        raise UserError(f"no images found in {str(folder)!r}: it has no class folders; "
                        f"expected {folder}/<class>/<image>.png")
    if classes is not None and names != classes:
        only_train = sorted(set(classes) - set(names))
        only_here = sorted(set(names) - set(classes))
        parts = ([f"only in train/: {', '.join(only_train)}"] if only_train else []) \
            + ([f"only in {folder.name}/: {', '.join(only_here)}"] if only_here else [])
        raise UserError(f"train/ and {folder.name}/ of {str(folder.parent)!r} must have the same class folders "
                        f"({'; '.join(parts)}); rename or remove them so both hold the same classes")
    top = _key(os.stat(folder))
    paths, labels, loops, owner = [], [], [], {}
    for index, e in enumerate(entries):
        key = _key(e.stat())
        if key == top:  # a class folder that is a link to the folder itself
            loops.append(e.path)
            continue
        files = []
        _walk_images(e.path, frozenset({top, key}), files, loops)
        for path in files:
            try:
                file_key = _key(os.stat(path))
            except OSError:
                file_key = ("missing", path)
            if file_key in owner:
                other_path, other = owner[file_key]
                if other != index:  # the same file under two labels: every label of it would be a guess
                    raise UserError(f"{other_path!r} (class {names[other]}) and {path!r} (class {e.name}) are the "
                                    "same file; an image must belong to one class: remove the link or copy")
                continue  # the same file reached twice within its class: read once
            owner[file_key] = (path, index)
            paths.append(path)
            labels.append(index)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    empty = [n for i, n in enumerate(names) if not (label_tensor == i).any()]
    if empty:
        raise UserError(f"class folder(s) {', '.join(empty)} of {str(folder)!r} hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)")
    return _FileList(paths, label_tensor, names, loops)


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


def hold_out(labels: torch.Tensor, fraction: float, seed: int = TEST_SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``range(len(labels))`` into ``(kept, held_out)``, stratified by class.

    ``k = round(len(labels) * fraction)`` items are held out, shared among the
    classes by largest remainder: class ``c`` of ``n_c`` items gives
    ``n_c * k / len(labels)`` rounded up or down (less than one item off), and
    which of its items go is a seeded draw. Both index tensors are sorted.
    """
    n = labels.numel()
    g = torch.Generator().manual_seed(seed)
    k = int(round(n * fraction))
    classes, sizes = labels.unique(return_counts=True)
    quota = sizes.double() * k / max(n, 1)
    share = quota.floor().long()
    # The items left after rounding down go to the largest remainders; ties in a seeded order.
    remainder = quota - share
    order = torch.randperm(len(classes), generator=g)
    order = order[torch.argsort(remainder[order], descending=True, stable=True)]
    share[order[:k - int(share.sum())]] += 1
    held = []
    for c, m in zip(classes.tolist(), share.tolist()):
        members = (labels == c).nonzero().squeeze(1)
        held.append(members[torch.randperm(len(members), generator=g)[:m]])
    mask = torch.zeros(n, dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return (~mask).nonzero().squeeze(1), mask.nonzero().squeeze(1)


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


# --------------------------------------------------------------------------- batching

class TensorLoader:
    """Batches an ``ImageSet`` on its device, with batched random crop and flip.

    Args:
        data: The images (moved to ``device``).
        batch_size: Images per batch.
        shuffle: Reshuffle every epoch.
        augment: Random crop (``data.pad``) and flip (``data.flip``).
        cutout: Side of a square zeroed at a random centre of each image (after
            normalisation, as DARTS does; 0: off). Applied only with ``augment``.
        rank, world_size: In a multi-process run, each rank yields its slice
            ``[rank::world_size]`` of every global batch (same order and draws everywhere).
        drop_last: Drop the last incomplete batch.
        seed: Base seed; epoch ``e`` draws its order and augmentation from ``seed``
            and ``e`` alone.
        device: Where the batches live.
    """

    def __init__(self, data: ImageSet, batch_size: int, shuffle: bool = True, augment: bool = True,
                 drop_last: bool = True, seed: int = 0, device: torch.device | str = "cpu", cutout: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last and len(data) > batch_size, seed
        self.pad = data.pad if augment else 0
        self.flip = data.flip and augment
        self.cutout = cutout if augment else 0
        self.rank, self.world_size = rank, world_size
        shape = (1, -1, 1, 1)
        self.mean = (torch.tensor(data.mean) * data.scale).view(shape).to(self.device)
        self.inv_std = 1.0 / (torch.tensor(data.std) * data.scale).view(shape).to(self.device)

    def __len__(self) -> int:
        n = self.labels.numel()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, repeat: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields ``(images [B, C, H, W] float32 normalised, labels [B])`` for one pass.

        The order and augmentation depend on ``(seed, epoch, repeat)`` only;
        ``start`` skips the first batches (their random draws are replayed, their
        images are not touched), so a resumed run sees exactly the batches it
        would have seen.
        """
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + repeat)
        n = self.labels.numel()
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            draws = self._draw(index.numel(), g)
            if b >= start:
                if self.world_size > 1:  # this rank's shard of the global batch
                    shard = slice(self.rank, None, self.world_size)
                    index = index[shard]
                    draws = tuple(None if d is None else d[..., shard] for d in draws)
                yield self._transform(self.images[index], *draws), self.labels[index]

    def cycle(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches: pass 0 of ``epoch``, then pass 1, ... (the arch steps' val batches).

        ``start`` is the number of batches already consumed.
        """
        repeat, start = divmod(start, len(self))
        while True:
            yield from self.epoch(epoch, repeat, start)
            repeat, start = repeat + 1, 0

    def _draw(self, B: int, g: torch.Generator):
        # Random draws of one batch, in a fixed order: crop offsets [2, B], flips [B], cutout centres [2, B].
        offsets = torch.randint(2 * self.pad + 1, (2, B), generator=g) if self.pad else None
        mirror = (torch.rand(B, generator=g) < 0.5) if self.flip else None
        H, W = self.images.shape[-2:]
        centres = torch.stack([torch.randint(H, (B,), generator=g), torch.randint(W, (B,), generator=g)]) \
            if self.cutout else None
        return offsets, mirror, centres

    def _transform(self, x: torch.Tensor, offsets: torch.Tensor | None, mirror: torch.Tensor | None,
                   centres: torch.Tensor | None = None) -> torch.Tensor:
        # x: uint8 [B, C, H, W] -> normalised float32 [B, C, H, W]
        B, C, H, W = x.shape
        if offsets is not None:
            # Random crop with zero padding: each image's window [oy:oy+H, ox:ox+W] of the padded image.
            p = self.pad
            x = torch.nn.functional.pad(x, (p, p, p, p))
            oy, ox = offsets.to(self.device)
            rows = (oy[:, None] + torch.arange(H, device=self.device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (ox[:, None] + torch.arange(W, device=self.device))[:, None, None, :]  # [B, 1, 1, W]
            x = x[torch.arange(B, device=self.device)[:, None, None, None],
                  torch.arange(C, device=self.device)[None, :, None, None], rows, cols]
        if mirror is not None:
            x = torch.where(mirror.to(self.device).view(B, 1, 1, 1), x.flip(3), x)
        x = (x.float() - self.mean) * self.inv_std
        if centres is not None:
            # Cutout: zero the square of side `cutout` around each centre (clipped at the border).
            cy, cx = centres.to(self.device)[:, :, None]  # [B, 1] each
            half = self.cutout // 2
            ys = torch.arange(H, device=self.device)
            xs = torch.arange(W, device=self.device)
            in_y = ((ys >= cy - half) & (ys < cy - half + self.cutout))[:, None, :, None]  # [B, 1, H, 1]
            in_x = ((xs >= cx - half) & (xs < cx - half + self.cutout))[:, None, None, :]  # [B, 1, 1, W]
            x = x.masked_fill(in_y & in_x, 0.0)
        return x


@dataclass
class SearchData:
    """What the search loop reads: weight-step batches, arch-step batches, and an eval pass over val."""

    train: TensorLoader
    val: TensorLoader
    val_eval: TensorLoader
    num_classes: int
    in_channels: int
    image_size: int


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into ``fraction`` and the rest."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(n * fraction))
    if not 0 < k < n:
        raise UserError(f"data.split={fraction} leaves an empty part of a {n}-image training set")
    return order[:k], order[k:]


def build_search_data(data: ImageSet, split: float, batch_size: int, augment: bool = True, seed: int = 0,
                      device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1) -> SearchData:
    """Splits the training set into weight and architecture halves and wraps each in a loader.

    ``batch_size`` is the global batch; with ``world_size`` ranks each gets a shard of it.
    """
    train_idx, val_idx = split_indices(len(data), split, seed)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)
    shard = dict(device=device, rank=rank, world_size=world_size)
    return SearchData(
        train=TensorLoader(train_set, batch_size, shuffle=True, augment=augment, seed=seed, **shard),
        # Arch steps see the val images with the training transform, as GDAS does.
        val=TensorLoader(val_set, batch_size, shuffle=True, augment=augment, seed=seed + 1, **shard),
        val_eval=TensorLoader(val_set, max(batch_size, 256), shuffle=False, augment=False, drop_last=False, **shard),
        num_classes=data.num_classes, in_channels=data.images.shape[1], image_size=data.images.shape[-1])
