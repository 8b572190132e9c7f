"""Datasets, the search split, and the loaders that batch them.

Every in-memory dataset becomes an ``ImageSet`` (uint8 images ``[N, C, H, W]``,
labels, how to normalise and augment them) batched by ``TensorLoader`` on any
device. An image folder too large for memory becomes a ``FileSet`` (paths and
labels) streamed from disk by ``StreamLoader`` through DataLoader workers; both
loaders yield the same ``(images, labels)`` batches and resume mid-epoch
exactly. ``docs/data.md`` says which is chosen when.
"""
from .cifar import load_cifar
from .digits import DIGITS_TEST_SIZE, load_digits
from .digits_clutter import (CLUTTER_CANVAS, CLUTTER_LARGE_COPIES, CLUTTER_LARGE_SEED, CLUTTER_FRAGMENT_SIZE, CLUTTER_FRAGMENTS, CLUTTER_MEAN, CLUTTER_NOISE,
                             CLUTTER_SEED, CLUTTER_STD, load_digits_clutter, load_digits_clutter_large)
from .file_set import FileSet, list_imagefolder, select_files
from .image_folder import load_imagefolder
from .image_set import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD,
                        ImageSet)
from .listing import IMAGE_EXTENSIONS
from .load import load_dataset
from .loader_choice import (LOADERS, MEMORY_LOADER_MAX_BYTES, TRANSFORMS, decoded_bytes, make_loader, open_dataset,
                            resolve_loader)
from .search_data import SearchData, build_search_data
from .splits import TEST_SPLIT_SEED, VAL_SPLIT_SEED, hold_out, split_indices
from .streaming import StreamLoader
from .synthetic import make_synthetic
from .tensor_loader import TensorLoader
from .transforms import TIMM_MIN_IMAGE_SIZE, resolve_transform, timm_transform

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "CLUTTER_CANVAS", "CLUTTER_FRAGMENT_SIZE",
    "CLUTTER_FRAGMENTS", "CLUTTER_LARGE_COPIES", "CLUTTER_LARGE_SEED", "CLUTTER_MEAN", "CLUTTER_NOISE", "CLUTTER_SEED", "CLUTTER_STD", "DIGITS_TEST_SIZE",
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "ImageSet", "SearchData", "TEST_SPLIT_SEED",
    "TensorLoader", "VAL_SPLIT_SEED", "build_search_data", "hold_out", "load_cifar", "load_dataset", "load_digits",
    "load_digits_clutter", "load_digits_clutter_large", "load_imagefolder", "make_synthetic", "split_indices",
    "FileSet", "LOADERS", "MEMORY_LOADER_MAX_BYTES", "StreamLoader", "TIMM_MIN_IMAGE_SIZE", "TRANSFORMS",
    "decoded_bytes", "list_imagefolder", "make_loader", "open_dataset", "resolve_loader", "resolve_transform",
    "select_files", "timm_transform",
]
