"""Reading one image file, and the per-image transforms of the streamed loader (``fixed`` or timm's)."""
from __future__ import annotations

import warnings

import torch

# transform=auto picks timm's augmentation from this side up: ImageNet-sized images, where a random
# resized crop of the full-resolution file is the usual training transform; below it, images are
# resized once and augmented batch-wise like the in-memory sets.
TIMM_MIN_IMAGE_SIZE = 128


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def _decode(path: str, image_size: int) -> tuple[torch.Tensor | None, str | None]:
    """Reads one image as uint8 ``[3, image_size, image_size]``; ``(None, reason)`` if it cannot be read."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    try:
        resized = read_rgb(path).resize((image_size, image_size), Image.Resampling.BILINEAR)
        return TF.pil_to_tensor(resized), None
    except Exception as e:  # whatever the decoder raises, the cause is this file
        return None, _one_line(e)


def decode_transformed(path: str, transform) -> tuple[torch.Tensor | None, str | None]:
    """Reads one image through ``transform`` (PIL -> float ``[3, S, S]``); ``(None, reason)`` if it cannot be read."""
    try:
        return transform(read_rgb(path)), None
    except Exception as e:  # whatever the decoder raises, the cause is this file
        return None, _one_line(e)


def resolve_transform(transform: str, image_size: int, dataset: str = "imagefolder") -> str:
    """``auto`` -> ``timm`` for an image folder of ``image_size >= TIMM_MIN_IMAGE_SIZE``, else ``fixed``."""
    if transform != "auto":
        return transform
    return "timm" if dataset == "imagefolder" and image_size >= TIMM_MIN_IMAGE_SIZE else "fixed"


def timm_transform(image_size: int, training: bool, mean: tuple, std: tuple):
    """timm's ImageNet transform of a PIL image -> normalised float ``[3, S, S]``.

    Training: random resized crop (scale 0.08-1), horizontal flip, colour jitter 0.4.
    Evaluation: resize to ``S / 0.875``, centre crop ``S``.
    """
    from timm.data import create_transform

    return create_transform(image_size, is_training=training, mean=mean, std=std)


def read_rgb(path: str):
    """The whole file decoded as an RGB PIL image (decompression bombs refused); raises what PIL raises."""
    from PIL import Image

    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that: a bomb all the same.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            return img.convert("RGB")  # decodes the whole file: truncated data fails here
