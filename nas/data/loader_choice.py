"""Memory or stream: which loader a dataset gets (``data.loader``, ``data.transform``), and building it.

Only image folders stream; the bundled digits, CIFAR and synthetic sets are
small and always held in memory. ``auto`` holds a folder in memory when its
decoded images fit ``MEMORY_LOADER_MAX_BYTES`` and the transform is ``fixed``:
then the batch-wise augmentation on the device is faster than decoding files
every epoch. Larger folders, and timm's transform (which crops the full-size
file), stream.
"""
from __future__ import annotations

from pathlib import Path

from ..utils.errors import UserError
from .file_set import FileSet, file_set_of, select_files
from .image_folder import decode_files
from .image_set import ImageSet
from .load import load_dataset
from .streaming import StreamLoader
from .tensor_loader import TensorLoader
from .transforms import resolve_transform

# loader=auto streams an image folder whose decoded training images ([N, 3, S, S] uint8) would
# exceed this; below it they are decoded once and held in memory (and on the training device).
MEMORY_LOADER_MAX_BYTES = 2 * 2**30
LOADERS = ("auto", "memory", "stream")
TRANSFORMS = ("auto", "fixed", "timm")


def decoded_bytes(num_images: int, image_size: int, channels: int = 3) -> int:
    """Bytes of ``num_images`` decoded uint8 images of side ``image_size``."""
    return num_images * channels * image_size * image_size


def resolve_loader(loader: str, transform: str, num_images: int, image_size: int) -> str:
    """``memory`` or ``stream`` for an image folder of ``num_images`` (``transform`` already resolved).

    Raises:
        UserError: ``memory`` asked for together with the ``timm`` transform.
    """
    if loader == "memory" and transform == "timm":
        raise UserError("data.loader=memory cannot apply data.transform=timm (timm crops the full-size files); "
                        "set data.loader=stream (or auto), or data.transform=fixed")
    if loader != "auto":
        return loader
    if transform == "timm" or decoded_bytes(num_images, image_size) > MEMORY_LOADER_MAX_BYTES:
        return "stream"
    return "memory"


def open_dataset(name: str, root: str | Path = "data", train: bool = True, download: bool = False,
                 image_size: int = 32, synthetic_size: int = 256, synthetic_classes: int = 4, seed: int = 0,
                 num_workers: int = 0, test_split: float = 0.1, skip_bad_images: bool = False,
                 loader: str = "auto", transform: str = "auto") -> ImageSet | FileSet:
    """``load_dataset``, or for an image folder that streams, its ``FileSet``.

    Args:
        loader: ``auto`` | ``memory`` | ``stream`` (see the module docstring).
        transform: ``auto`` | ``fixed`` | ``timm`` (``auto``: timm from
            ``TIMM_MIN_IMAGE_SIZE`` up, for image folders).
        Others: as in ``load_dataset``.

    Raises:
        UserError: ``stream`` or ``timm`` for a dataset that is not an image folder.
    """
    if name != "imagefolder":
        if loader == "stream" or transform == "timm":
            raise UserError(f"data.loader=stream and data.transform=timm apply to data.dataset=imagefolder only, "
                            f"not {name}; set data.loader=auto and data.transform=auto")
        return load_dataset(name, root, train, download, image_size, synthetic_size, synthetic_classes, seed,
                            num_workers, test_split, skip_bad_images)
    transform = resolve_transform(transform, image_size, name)
    files = select_files(root, train, test_split)  # listed once, whichever loader reads them
    if resolve_loader(loader, transform, len(files.paths), image_size) == "stream":
        return file_set_of(files, image_size, transform, num_workers, skip_bad_images)
    return decode_files(files, image_size, train, num_workers, skip_bad_images)


def make_loader(data: ImageSet | FileSet, batch_size: int, **kwargs) -> TensorLoader | StreamLoader:
    """``TensorLoader`` for an ``ImageSet``, ``StreamLoader`` for a ``FileSet``; ``kwargs`` as both take them."""
    return (StreamLoader if isinstance(data, FileSet) else TensorLoader)(data, batch_size, **kwargs)
