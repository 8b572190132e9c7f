"""Progressive shrinking of the candidate ops: drop each edge's least probable op every k epochs.

A search whose logit gradients are mostly noise (``benchmarks/search_diagnosis.py``
measures this) spreads its probability over all ops for most of the run and
settles late or never. Shrinking turns the remaining budget into fewer, better
separated choices: at the end of every ``search.shrink_every``-th epoch
(counted after ``search.shrink_start``), each edge that still has more than
``search.shrink_to`` candidates loses the one with the lowest probability, or,
with ``search.shrink_by=op_marginals``, the lowest marginal accuracy on the
supernet (``nas.engine.selection``; the searcher passes those scores). A
dropped op is masked exactly as an op that does not exist on the edge
(``Architecture.allowed_<group>``: its logit reads as ``MASKED_LOGIT``, it is
never sampled, derived or given a gradient), so every sampler, gate and
derivation rule sees the smaller set without knowing about shrinking.

The masks are buffers of the architecture, hence of the supernet's
``state_dict``: a checkpoint holds the candidate sets and a resumed run
continues with exactly them.

Ops that derivation never picks (``model.derive_exclude``, DARTS's ``none``)
may be dropped at any time but never count towards the ``shrink_to`` that must
remain, so an edge always keeps ``shrink_to`` derivable ops.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .architecture import Architecture


def shrink_due(epoch: int, every: int, start: int = 0) -> bool:
    """Whether the candidate sets shrink at the end of ``epoch`` (1-based).

    Args:
        epoch: The epoch just finished, counted from 1.
        every: Epochs between drops (0: never).
        start: Epochs before the first interval begins (the first drop ends epoch ``start + every``).
    """
    return every > 0 and epoch > start and (epoch - start) % every == 0


def enable(arch: Architecture) -> None:
    """Gives every group an ``allowed_<group>`` mask (all True where there was none), so ops can be dropped.

    Call before the optimizers and any checkpoint are made: the masks become part of the state dict.
    """
    for group, logits in arch.logits.items():
        if group not in arch.masked:
            arch.register_buffer(f"allowed_{group}", torch.ones(logits.shape, dtype=torch.bool, device=logits.device))
    arch.masked = sorted(arch.logits.keys())


def ops_to_drop(probabilities: torch.Tensor, allowed: torch.Tensor, keep: int,
                protected: Sequence[bool]) -> list[int | None]:
    """Per edge, the column to drop now (None: the edge keeps its candidates).

    An edge holding more than ``keep`` ops drops its least probable one (ties: the
    higher column) among those that may go: an op that is not derivable
    (``protected[k]`` False) may always go, a derivable one only while more than
    ``keep`` derivable ones remain.

    Args:
        probabilities: ``[num_edges, num_ops]`` op probabilities (masked ops at 0).
        allowed: bool ``[num_edges, num_ops]``, the current candidates.
        keep: Derivable ops that must remain on each edge.
        protected: Per column, whether the op is derivable (counts towards ``keep``).
    """
    out: list[int | None] = []
    for row, mask in zip(probabilities.tolist(), allowed.tolist()):
        columns = [k for k, ok in enumerate(mask) if ok]
        derivable = sum(1 for k in columns if protected[k])
        droppable = [k for k in columns if not protected[k] or derivable > keep]
        out.append(min(droppable, key=lambda k: (row[k], -k)) if droppable and len(columns) > keep else None)
    return out


@torch.no_grad()
def shrink(arch: Architecture, keep: int, exclude: Sequence[str] = (),
           scores: dict[str, torch.Tensor] | None = None) -> dict[str, list[str | None]]:
    """Drops one op per edge (``ops_to_drop``) in every group, in place; returns group -> the dropped op names.

    Args:
        arch: The architecture (``enable`` called on it).
        keep: Derivable ops each edge keeps at the end.
        exclude: Op names derivation never picks (they do not count towards ``keep``).
        scores: group -> ``[edges, ops]`` measure to rank the ops by instead of their probabilities
            (``search.shrink_by=op_marginals``: ``selection.marginal_scores``); the lowest goes.
    """
    probs = arch.probabilities() if scores is None else scores
    protected = [name not in set(exclude) for name in arch.op_names]
    dropped: dict[str, list[str | None]] = {}
    for group, p in probs.items():
        mask = getattr(arch, f"allowed_{group}")
        columns = ops_to_drop(p, mask.cpu(), keep, protected)
        for edge, k in enumerate(columns):
            if k is not None:
                mask[edge, k] = False
        dropped[group] = [None if k is None else arch.op_names[k] for k in columns]
    return dropped


def candidates(arch: Architecture) -> dict[str, list[int]]:
    """group -> per edge the number of ops still allowed."""
    return {g: getattr(arch, f"allowed_{g}").sum(-1).tolist() if g in arch.masked else [l.shape[1]] * l.shape[0]
            for g, l in arch.logits.items()}


def mask_ops(arch: Architecture, names: Sequence[str]) -> None:
    """Removes the ops ``names`` from every edge's candidates from the start (``search.sample_excluded=false``).

    Call after ``enable``: a removed op is never sampled, trained, given a gradient or derived,
    exactly like an op shrinking dropped.
    """
    names = set(names)
    columns = [k for k, name in enumerate(arch.op_names) if name in names]
    for group in arch.logits:
        mask = getattr(arch, f"allowed_{group}")
        mask[:, columns] = False
        if not mask.any(-1).all():
            raise ValueError(f"removing {sorted(names)} leaves an edge of {group!r} without a candidate op")
