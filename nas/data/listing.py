"""Walking an image folder (``root/<class>/...``): one path and label per image file, loops and links handled."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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
