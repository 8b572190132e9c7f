"""The architecture: every logit of a search, one sample per forward pass.

The logits live here and nowhere else, as ``nn.Parameter``s, so they are in
every ``state_dict``, move with ``.to()``, and checkpointing, broadcasting and
export have one place to look. A decision *group* is one table of logits
``[num_edges, num_ops]``: NB201 has one (``cell``, 6x5) shared by all cells;
DARTS has two (``normal`` and ``reduce``, 14x8 each).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .gumbel import gumbel_softmax_sample

MODES = ("gdas", "snas", "darts")


@dataclass
class ArchSample:
    """One architecture sample for a whole forward pass.

    Attributes:
        weights: group -> ``[num_edges, num_ops]`` float32 weights: straight-through
            one-hot (``gdas``, and the derived architecture), relaxed Gumbel-softmax
            (``snas``) or softmax (``darts``); differentiable w.r.t. the logits.
        indices: group -> the chosen op of each edge as Python ints (hard samples
            only, else None). Moved to the host once per sample, so the dispatch
            in the choice layers costs no device synchronisation.
    """

    weights: dict[str, torch.Tensor]
    indices: dict[str, list[int]] | None = None


class Architecture(nn.Module):
    """Holds the architecture logits and draws samples from them.

    Args:
        groups: group name -> ``(num_edges, num_ops)``.
        op_names: The candidate op names, in logit column order.
        init_std: Standard deviation of the initial logits (GDAS uses 1e-3).
    """

    def __init__(self, groups: dict[str, tuple[int, int]], op_names: list[str], init_std: float = 1e-3):
        super().__init__()
        self.op_names = list(op_names)
        for name, (num_edges, num_ops) in groups.items():
            if num_ops != len(self.op_names):
                raise ValueError(f"group {name!r} has {num_ops} ops but {len(self.op_names)} op names")
        self.logits = nn.ParameterDict(
            {name: nn.Parameter(init_std * torch.randn(e, k)) for name, (e, k) in groups.items()})
        self.generator: torch.Generator | None = None

    def seed(self, seed: int) -> torch.Generator:
        """Creates the sampler's own ``torch.Generator`` on the logits' device."""
        device = next(iter(self.logits.values())).device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        return self.generator

    def _generator(self) -> torch.Generator | None:
        device = next(iter(self.logits.values())).device
        if self.generator is not None and self.generator.device != device:
            raise RuntimeError("the sampler's generator is on another device: call seed() after .to()")
        return self.generator

    def sample(self, mode: str, tau: float) -> ArchSample:
        """Draws one sample for all groups.

        Args:
            mode: ``gdas`` (hard straight-through), ``snas`` (relaxed) or ``darts`` (softmax).
            tau: Gumbel-softmax temperature (unused by ``darts``).
        """
        if mode == "darts":
            return ArchSample({g: torch.softmax(l.float(), dim=-1) for g, l in self.logits.items()})
        generator = self._generator()
        weights, indices = {}, {}
        for group, logits in self.logits.items():
            soft, hard, index = gumbel_softmax_sample(logits, tau=tau, generator=generator)
            weights[group] = hard if mode == "gdas" else soft
            indices[group] = index
        if mode != "gdas":
            return ArchSample(weights)
        return ArchSample(weights, self._to_host(indices))

    def derive(self, mode: str = "gdas") -> ArchSample:
        """The deterministic architecture: argmax one-hot for ``gdas``, softmax for the soft modes."""
        if mode != "gdas":
            return self.sample("darts", 1.0)
        weights, indices = {}, {}
        for group, logits in self.logits.items():
            index = logits.detach().argmax(dim=-1)
            weights[group] = torch.zeros_like(logits, dtype=torch.float32).scatter_(-1, index[:, None], 1.0)
            indices[group] = index
        return ArchSample(weights, self._to_host(indices))

    @staticmethod
    def _to_host(indices: dict[str, torch.Tensor]) -> dict[str, list[int]]:
        # One device-to-host transfer for every edge of every group.
        flat = torch.cat([i.reshape(-1) for i in indices.values()]).tolist()
        out, start = {}, 0
        for group, index in indices.items():
            out[group] = flat[start:start + index.numel()]
            start += index.numel()
        return out

    @torch.no_grad()
    def probabilities(self) -> dict[str, torch.Tensor]:
        """group -> ``softmax(logits)`` ``[num_edges, num_ops]`` on the CPU."""
        return {g: torch.softmax(l.float(), dim=-1).cpu() for g, l in self.logits.items()}

    @torch.no_grad()
    def entropy(self) -> dict[str, torch.Tensor]:
        """group -> per-edge entropy (nats) of ``softmax(logits)``, ``[num_edges]``."""
        out = {}
        for g, l in self.logits.items():
            logp = torch.log_softmax(l.float(), dim=-1)
            out[g] = -(logp.exp() * logp).sum(-1).cpu()
        return out
