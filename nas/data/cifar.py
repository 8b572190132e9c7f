"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle folders, read without running code."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..utils.errors import UserError
from .image_set import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, ImageSet

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
