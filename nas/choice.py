"""The choice layer: the candidate ops of one edge (or layer), mixed by a sample row.

It knows nothing about cells: it gets its input, its row of the architecture
sample and, for hard samples, the chosen index as a Python int.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .ops import Pooling, Zero, add_all
from .straight_through import StraightThroughBatchNorm2d, gate_avg_pool, gate_output, gate_recompute


class ChoiceLayer(nn.Module):
    """Runs the candidate ops of an edge according to one row of an ``ArchSample``.

    Args:
        ops: op name -> module, in the column order of the architecture logits.
            An op named ``none`` must return zeros (see ``nas.ops.Zero``).
    """

    def __init__(self, ops: dict[str, nn.Module]):
        super().__init__()
        self.op_names = list(ops)
        self.ops = nn.ModuleList(ops.values())
        # Ops that contribute exactly zero to a soft mixture (and whose weight's
        # gradient is exactly zero), so the soft modes skip them.
        self._nonzero = [i for i, name in enumerate(self.op_names) if name != "none"]
        # DARTS-: an auxiliary identity path beta * x, beta decayed 1 -> 0 by the search loop.
        self.skip_beta = 0.0
        # An edge a genotype drops runs the zero op (None where the layer has none: it is never dropped).
        self._zero = self.op_names.index("none") if "none" in self.op_names else None

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | tuple[int, ...] | None = None
                ) -> torch.Tensor:
        """Mixes the ops.

        Args:
            x: Input ``[B, C, H, W]``.
            weights: This edge's sample row ``[num_ops]``.
            index: The sampled op (hard samples): only that op runs. A tuple is a genotype's ops on
                this edge (``Supernet.genotype_sample``): they run unweighted and are summed, an empty
                tuple (an edge the genotype drops) runs the zero op, and no auxiliary skip is added
                (the genotype has none).

        Returns:
            ``[B, C_out, H_out, W_out]``.
        """
        if isinstance(index, tuple):
            if not index:
                if self._zero is None:
                    raise ValueError(f"a genotype drops an edge whose ops ({', '.join(self.op_names)}) have no 'none'")
                index = (self._zero,)
            return add_all(self.ops[i](x) for i in index)
        if index is None:  # snas / darts: every op, weighted
            out = add_all(weights[i] * self.ops[i](x) for i in self._nonzero)
        elif not weights.requires_grad:  # the weight step: the sample is exactly one-hot
            out = self.ops[index](x)
        else:
            # GDAS: the value is op(x) (weights[index] == 1 exactly); the sampled logit gets
            # <grad, op(x)>, the others grad.sum() (see nas.straight_through).
            out = self._straight_through(self.ops[index], x, weights, index)
        if self.skip_beta and out.shape == x.shape:
            out = out + self.skip_beta * x
        return out

    @staticmethod
    def _straight_through(op: nn.Module, x: torch.Tensor, weights: torch.Tensor, index: int) -> torch.Tensor:
        """``op(x)`` behind the cheapest exact gate for this op (see ``nas.straight_through``)."""
        if isinstance(op, Zero):
            return gate_output(op(x), weights, index, is_zero=True)
        pool = op.pool if isinstance(op, Pooling) and op.preprocess is None else op
        if type(pool) is nn.AvgPool2d:
            return gate_avg_pool(op, pool, x, weights, index)
        if type(pool) is nn.MaxPool2d:
            return gate_recompute(op, x, weights, index)
        norm = getattr(op, "final_norm", None)
        if isinstance(norm, StraightThroughBatchNorm2d) and norm.can_gate():
            norm.gate = (weights, index)  # the op's last BN becomes the gate for this one call
            try:
                return op(x)
            finally:
                norm.gate = None
        return gate_output(op(x), weights, index)
