"""The supernet base class: an architecture plus the weights its samples route through.

A space's supernet subclasses ``Supernet`` and implements ``forward_sample``.
The search loop sees a supernet only through ``arch_parameters()``,
``weight_parameters()``, ``forward`` and ``architecture``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..sampling.architecture import MODES, Architecture, ArchSample

if TYPE_CHECKING:
    from .choice import ChoiceLayer


class Supernet(nn.Module):
    """Base class of every search supernet.

    Args:
        architecture: The module holding the logits.
        mode: ``gdas``, ``snas`` or ``darts``.
    """

    def __init__(self, architecture: Architecture, mode: str = "gdas"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        self.architecture = architecture
        self.mode = mode
        self.tau = 1.0

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits (for the arch optimizer only)."""
        return list(self.architecture.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture logit (for the weight optimizer)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, C, H, W]``.

        In training mode each call draws one fresh sample for the whole network;
        in eval mode it runs the per-edge argmax op (``none`` included, every edge)
        for ``gdas`` and the softmax-weighted supernet for ``snas``/``darts``. Neither
        is the exported genotype, which derivation rules, exclusions and caps shape:
        run that with ``forward_sample(x, genotype_sample(space.genotype_edges(genotype)))``.
        """
        if self.training:
            sample = self.architecture.sample(self.mode, self.tau)
        else:
            sample = self.architecture.derive(self.mode)
        return self.forward_sample(x, sample)

    @torch.no_grad()
    def genotype_sample(self, edges: list[tuple[str, int, str]]) -> ArchSample:
        """The sample under which ``forward_sample`` runs exactly a genotype's network on the shared weights.

        Each choice layer runs the ops the genotype puts on its edge, unweighted and summed
        (an edge with two kept ops runs both); an edge the genotype drops runs the zero op.
        PC-DARTS edge coefficients are not applied (``edge_coefficients`` is None): the genotype, and
        the network ``build_network`` makes of it, sums a node's kept inputs unweighted.

        Args:
            edges: ``space.genotype_edges(genotype)``: ``(group, logit row, op name)`` per kept op.

        Returns:
            An ``ArchSample`` whose ``indices`` hold a tuple of op columns per edge and whose
            ``coefficients`` count the genotype's ops per edge and column (so ``nas.cost.expected_cost``
            of it is the genotype's cost).
        """
        ops = self.architecture.op_names
        coefficients = {g: torch.zeros(l.shape, dtype=torch.float32, device=l.device)
                   for g, l in self.architecture.logits.items()}
        columns: dict[str, list[list[int]]] = {g: [[] for _ in range(w.shape[0])] for g, w in coefficients.items()}
        for group, row, op in edges:
            if group not in coefficients or not 0 <= row < coefficients[group].shape[0] or op not in ops:
                raise ValueError(f"the genotype's edge ({group!r}, row {row}, {op!r}) is not in this supernet "
                                 f"(groups {dict((g, tuple(w.shape)) for g, w in coefficients.items())}, ops {ops})")
            columns[group][row].append(ops.index(op))
            coefficients[group][row, ops.index(op)] += 1.0
        return ArchSample(coefficients, {g: [tuple(c) for c in rows] for g, rows in columns.items()}, None)

    def forward_sample(self, x: torch.Tensor, sample: ArchSample) -> torch.Tensor:
        """Runs the network under a given sample; implemented by each space."""
        raise NotImplementedError

    def choice_layers(self) -> list[tuple[str, int, "ChoiceLayer"]]:
        """Every choice layer as ``(group, edge_index, layer)``: it mixes row ``edge_index`` of logit table ``group``.

        Layers that share a row (the same edge in every cell of a kind) are listed once each.
        Implemented by each space; the cost tables (``nas.cost``) are built from it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not list its choice layers")
