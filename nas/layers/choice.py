"""The choice layer: the candidate ops of one edge (or layer), mixed by a sample row.

It knows nothing about cells: it gets its input, its row of the architecture
sample and, for hard samples, the chosen index as a Python int.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from .op_traits import OpTraits, check_declared, op_traits_of
from .ops import Pooling, add_all
from .gates import ALL_OPS, GATE_RULES, StraightThroughBatchNorm2d, gate_avg_pool, gate_output, gate_recompute


class ChoiceLayer(nn.Module):
    """Runs the candidate ops of an edge according to one row of an ``ArchSample``.

    Args:
        ops: op name -> module, in the column order of the architecture logits.
            An op whose traits say ``zero`` must return zeros (as ``nas.layers.ops.Zero``).
        gdas_gate: What the unsampled ops' coefficients get in a GDAS arch step
            (``nas.layers.gates.GATE_RULES``): ``all_ops`` (NAS-Bench-201's
            rule, ``g.sum()`` each) or ``sampled_op`` (DARTS-space rule, nothing).
        aux_skip: DARTS-'s auxiliary skip path of this edge (identity, or a
            factorized reduction where the edge strides), scaled by ``skip_beta``;
            None when the edge has none (e.g. a layer that changes width).
        traits: op name -> its ``OpTraits``, for every op (a space passes its declarations);
            None: each module's own ``op_traits`` attribute (``Zero`` declares one), else
            ``LEARNED``.
    """

    def __init__(self, ops: dict[str, nn.Module], gdas_gate: str = ALL_OPS, aux_skip: nn.Module | None = None,
                 traits: Mapping[str, OpTraits] | None = None):
        super().__init__()
        if gdas_gate not in GATE_RULES:
            raise ValueError(f"unknown GDAS gate rule {gdas_gate!r}; choose from {', '.join(GATE_RULES)}")
        self.op_names = list(ops)
        self.ops = nn.ModuleList(ops.values())
        self.gdas_gate = gdas_gate
        if traits is not None:
            check_declared("a ChoiceLayer's traits", self.op_names, traits)
        self.traits: list[OpTraits] = [traits[name] if traits is not None else op_traits_of(op)
                                       for name, op in ops.items()]
        # Zero ops contribute exactly zero to a soft mixture (and their weight's
        # gradient is exactly zero), so the soft modes skip them.
        self._nonzero = [i for i, t in enumerate(self.traits) if not t.zero]
        # DARTS-: an auxiliary path beta * aux_skip(x), beta decayed 1 -> 0 by the search loop.
        self.aux_skip = aux_skip
        self.skip_beta = 0.0
        # Per op: does it return its ``final_norm``'s output (None: not seen yet)? Decides the fused BN gate.
        self._returns_final_norm: list[bool | None] = [None] * len(self.ops)
        # An edge a genotype drops runs the zero op (None where the layer has none: it is never dropped).
        self._zero = next((i for i, t in enumerate(self.traits) if t.zero), None)

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor, index: int | tuple[int, ...] | None = None
                ) -> torch.Tensor:
        """Mixes the ops.

        Args:
            x: Input ``[B, C, H, W]``.
            coefficients: This edge's sample row ``[num_ops]``.
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
                    raise ValueError(f"a genotype drops an edge whose ops ({', '.join(self.op_names)}) have no zero op")
                index = (self._zero,)
            return add_all(self.ops[i](x) for i in index)
        if index is None:  # snas / darts: every op, weighted
            out = add_all(coefficients[i] * self.ops[i](x) for i in self._nonzero)
        elif not coefficients.requires_grad:  # the weight step: the sample is exactly one-hot
            out = self.ops[index](x)
        else:
            # GDAS: the value is op(x) (coefficients[index] == 1 exactly); the sampled logit gets
            # <grad, op(x)>, the others grad.sum() or nothing (self.gdas_gate; see nas.layers.gates).
            out = self._straight_through(index, x, coefficients)
        if self.skip_beta and self.aux_skip is not None:
            out = out + self.skip_beta * self.aux_skip(x)  # [B, C_out, H_out, W_out]
        return out

    def _straight_through(self, index: int, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``ops[index](x)`` behind the cheapest exact gate for that op (see ``nas.layers.gates``)."""
        op, rule = self.ops[index], self.gdas_gate
        if self.traits[index].zero:
            return gate_output(op(x), coefficients, index, is_zero=True, rule=rule)
        pool = op.pool if isinstance(op, Pooling) and op.preprocess is None else op
        if type(pool) is nn.AvgPool2d:
            return gate_avg_pool(op, pool, x, coefficients, index, rule)
        if type(pool) is nn.MaxPool2d:
            return gate_recompute(op, x, coefficients, index, rule)
        norm = getattr(op, "final_norm", None)
        if (isinstance(norm, StraightThroughBatchNorm2d) and norm.can_gate()
                and self._returns_final_norm[index] is not False):
            out = self._gate_in_final_norm(index, op, norm, x, coefficients)
            if out is not None:
                return out
        return gate_output(op(x), coefficients, index, rule=rule)

    def _gate_in_final_norm(self, index: int, op: nn.Module, norm: StraightThroughBatchNorm2d, x: torch.Tensor,
                            coefficients: torch.Tensor) -> torch.Tensor | None:
        """Runs ``op`` with its final BN as the gate; None if ``op`` did not return that BN's output.

        The fused gate is exact only when the op's output IS the gated BN's output
        (the identity is checked on every call). The first call of an op that breaks
        this restores the buffers it changed and returns None (the caller reruns it
        behind the generic gate); later calls skip the fused gate.
        """
        first = self._returns_final_norm[index] is None
        buffers = [b.clone() for b in op.buffers()] if first else None  # running stats: a few per-channel tensors
        norm.gate = (coefficients, index, self.gdas_gate)  # the op's last BN becomes the gate for this one call
        try:
            out = op(x)
            returned = out is norm.gated_output
        finally:
            norm.gate, norm.gated_output = None, None
        if returned:
            self._returns_final_norm[index] = True
            return out
        if not first:
            raise RuntimeError(f"op {self.op_names[index]!r} returned its final_norm's output before but not now; "
                               "the fused straight-through gate needs it every call")
        self._returns_final_norm[index] = False
        with torch.no_grad():
            for b, saved in zip(op.buffers(), buffers):
                b.copy_(saved)
        return None
