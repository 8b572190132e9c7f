"""``TensorLoader``: batches of an in-memory ``ImageSet`` on any device, augmented batch-wise.

The search needs no DataLoader workers for such sets; the data order of each
epoch is a pure function of (seed, epoch), which makes resumed runs see the
same batches.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .image_set import ImageSet

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

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image as the loader yields it."""
        return tuple(self.images.shape[1:])

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
        H, W = self.image_shape[-2:]
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
        return self._cutout(x, centres)

    def _cutout(self, x: torch.Tensor, centres: torch.Tensor | None) -> torch.Tensor:
        # x: normalised float32 [B, C, H, W]; centres: [2, B] or None (no cutout)
        if centres is not None:
            B, C, H, W = x.shape
            # Cutout: zero the square of side `cutout` around each centre (clipped at the border).
            cy, cx = centres.to(self.device)[:, :, None]  # [B, 1] each
            half = self.cutout // 2
            ys = torch.arange(H, device=self.device)
            xs = torch.arange(W, device=self.device)
            in_y = ((ys >= cy - half) & (ys < cy - half + self.cutout))[:, None, :, None]  # [B, 1, H, 1]
            in_x = ((xs >= cx - half) & (xs < cx - half + self.cutout))[:, None, None, :]  # [B, 1, 1, W]
            x = x.masked_fill(in_y & in_x, 0.0)
        return x
