"""``StreamLoader``: batches of a ``FileSet`` decoded from disk by DataLoader workers.

Memory holds the paths, the labels and the batches in flight, never the set.
The loader yields what ``TensorLoader`` yields, ``(images [B, C, H, W] float32
normalised, labels [B])`` on its device, and has its interface (``epoch``,
``cycle``, ``len``, ``labels``, ``image_shape``), so the search and the
retraining take either.

Order and augmentation are pure functions of ``(seed, epoch, repeat)``:

- one process: the order and the batch-wise crop/flip/cutout draws are
  ``TensorLoader``'s own, so with the ``fixed`` transform a streamed run sees
  the very tensors an in-memory run sees;
- under torchrun (``world_size > 1``): a ``DistributedSampler`` (seeded,
  ``set_epoch`` per pass) gives each rank its share of the set, and each rank
  yields batches of ``batch_size // world_size``;
- ``timm`` transform: each image's random crop/flip/jitter is seeded by
  ``(seed, epoch, repeat, index)``, so it does not depend on the worker that
  decodes it nor on where a resumed run starts.

``start`` skips consumed batches without reading them, so a resumed run sees
exactly the batches it would have seen.
"""
from __future__ import annotations

import random
from typing import Iterator

import torch
from torch.utils.data.distributed import DistributedSampler

from ..utils.errors import UserError
from .file_set import FileSet
from .tensor_loader import TensorLoader
from .transforms import _decode, decode_transformed, timm_transform


class _Files(torch.utils.data.Dataset):
    """Decodes ``(index, key)`` items in a worker; a file that cannot be read gives its reason, not an exception.

    ``key`` seeds the random transform of that one image (None: no random transform).
    """

    def __init__(self, paths: list, image_size: int, transform=None):
        self.paths, self.image_size, self.transform = paths, image_size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int | None]):
        i, key = item
        if self.transform is None:
            return _decode(self.paths[i], self.image_size)
        if key is None:
            return decode_transformed(self.paths[i], self.transform)
        # timm draws from Python's `random` and torch's global generator: seed both for this image,
        # and give the process (the main one when num_workers=0) its own states back.
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key)
            random.seed(key)
            try:
                return decode_transformed(self.paths[i], self.transform)
            finally:
                random.setstate(state)


class _Items:
    """The DataLoader's batch sampler: each batch's ``(index, key)`` items, made when the loader asks for them
    (a pass over a million files never holds a million tuples)."""

    def __init__(self, batches: list, key: int | None):
        self.batches, self.key = batches, key

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            if self.key is None:
                yield [(i, None) for i in b.tolist()]
            else:  # one seed per (pass, image): the image's augmentation, wherever and whenever it is decoded
                yield [(i, (self.key * 10_000_019 + i) % 2**63) for i in b.tolist()]


def _as_list(batch: list) -> list:
    return batch


class StreamLoader(TensorLoader):
    """Streams a ``FileSet`` from disk in batches (see the module docstring for order and resume).

    Args:
        data: The files (``data.transform``, ``data.num_workers`` and
            ``data.skip_bad_images`` say how to read them).
        batch_size: Images per global batch; each of ``world_size`` ranks reads
            ``batch_size // world_size`` of them.
        shuffle, augment, drop_last, seed, device, cutout: As in ``TensorLoader``.
            ``augment`` with the ``timm`` transform is timm's training transform,
            without it timm's evaluation transform (resize, centre crop).
        rank, world_size: This process's place in a torchrun job.
    """

    def __init__(self, data: FileSet, batch_size: int, shuffle: bool = True, augment: bool = True,
                 drop_last: bool = True, seed: int = 0, device: torch.device | str = "cpu", cutout: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.device = torch.device(device)
        self.data = data
        self.labels = data.labels  # [N] on the CPU: indexed per batch, moved with it
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last and len(data) > batch_size, seed
        timm = data.transform == "timm"
        self.pad = data.pad if augment and not timm else 0
        self.flip = data.flip and augment and not timm
        self.cutout = cutout if augment else 0
        self.rank, self.world_size = rank, world_size
        shape = (1, -1, 1, 1)
        self.mean = (torch.tensor(data.mean) * data.scale).view(shape).to(self.device)
        self.inv_std = 1.0 / (torch.tensor(data.std) * data.scale).view(shape).to(self.device)
        transform = timm_transform(data.image_size, augment, data.mean, data.std) if timm else None
        self.seeded_items = timm and augment  # per-image random draws, seeded per item
        self.files = _Files(data.paths, data.image_size, transform)
        self.sampler = None
        if world_size > 1:
            # Takes rank and world as arguments: no process group is needed to build it.
            self.sampler = DistributedSampler(self.files, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                              seed=seed, drop_last=self.drop_last)
        self.local_batch = max(1, batch_size // world_size)

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image as the loader yields it."""
        return self.data.image_shape

    def __len__(self) -> int:
        if self.sampler is None:
            return super().__len__()
        m = self._rank_images()
        return m // self.local_batch if self.drop_last else -(-m // self.local_batch)

    def _rank_images(self) -> int:
        """This rank's images per pass: equal on every rank (the sampler pads or trims), except in an
        evaluation pass (no shuffle, no drop_last), which reads every image exactly once: its ranks may run
        different numbers of batches, which evaluation allows (one all-reduce of its sums at the end)."""
        if not self.shuffle and not self.drop_last:
            return len(range(self.rank, self.labels.numel(), self.world_size))
        return len(self.sampler)

    def _batches(self, epoch: int, repeat: int) -> tuple[list, list, int]:
        """This pass's index batches (``[B]`` each), their augmentation draws, and the pass's key."""
        key = (self.seed * 1_000_003 + epoch) * 1_009 + repeat
        g = torch.Generator().manual_seed(key)
        n = self.labels.numel()
        if self.sampler is None:  # TensorLoader's order and draws, consumed from g in the same sequence
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            size = self.batch_size
        else:
            self.sampler.set_epoch(epoch * 1_009 + repeat)
            order = torch.tensor(list(self.sampler), dtype=torch.long)[:self._rank_images()]  # padding trimmed
            g.manual_seed(key * 1_000_033 + self.rank)  # each rank draws its own shard's augmentation
            size = self.local_batch
        batches, draws = [], []
        for b in range(len(self)):
            index = order[b * size:(b + 1) * size]
            batches.append(index)
            draws.append(self._draw(index.numel(), g))
        return batches, draws, key

    def epoch(self, epoch: int, repeat: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields ``(images [B, C, H, W] float32 normalised, labels [B])`` for one pass from batch ``start`` on.

        Raises:
            UserError: a file that cannot be read (unless ``skip_bad_images``: it leaves its batch).
        """
        batches, draws, key = self._batches(epoch, repeat)
        batches, draws = batches[start:], draws[start:]
        if not batches:
            return
        items = _Items(batches, key if self.seeded_items else None)
        workers = self.data.num_workers
        loader = torch.utils.data.DataLoader(self.files, batch_sampler=items, num_workers=workers,
                                             collate_fn=_as_list, pin_memory=self.device.type == "cuda",
                                             persistent_workers=False)
        for index, (offsets, mirror, centres), decoded in zip(batches, draws, loader):
            bad = [k for k, (image, _) in enumerate(decoded) if image is None]
            if bad:
                if not self.data.skip_bad_images:
                    path, reason = self.data.paths[int(index[bad[0]])], decoded[bad[0]][1]
                    raise UserError(f"cannot read image {path!r} ({reason}); fix or delete it, or set "
                                    "data.skip_bad_images=true to leave out the images that cannot be read")
                kept = torch.tensor([k for k in range(len(decoded)) if k not in set(bad)], dtype=torch.long)
                index = index[kept]
                offsets, mirror, centres = (None if d is None else d[..., kept] for d in (offsets, mirror, centres))
                decoded = [decoded[k] for k in kept.tolist()]
                if not decoded:
                    continue
            x = torch.stack([image for image, _ in decoded]).to(self.device, non_blocking=True)  # [B, C, H, W]
            y = self.labels[index].to(self.device, non_blocking=True)                            # [B]
            if x.dtype == torch.uint8:  # fixed: TensorLoader's batch-wise crop, flip, normalisation, cutout
                x = self._transform(x, offsets, mirror, centres)
            else:  # timm: already cropped and normalised per image
                x = self._cutout(x, centres)
            yield x, y
