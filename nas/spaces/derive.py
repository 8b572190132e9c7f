"""Derivation with exclusions and caps: ops a cell may never use, and at most K
edges of a cell with a given kind of op.

Parameter-free ops (skip connections above all) win in weight-sharing searches
because they train fastest, not because they are best (DARTS collapse; see
P-DARTS and DARTS-). A cap keeps the derived cell from being made of them:
while a cell uses more capped ops than allowed, the weakest such choice (lowest
probability) is ruled out and the cell is derived again by the space's own rule.
Which ops a cap counts comes from the space's declared ``OpTraits``: ``max_skip``
counts the ``skip`` ops, ``max_parameter_free`` the ``parameter_free`` ones that
are not ``zero``. Excluding the zero op is the DARTS convention (its derivation
never keeps it: its weight says little about the edge, only that its other ops
are still untrained); NAS-Bench-201's GDAS derivation keeps it, so it is a
switch here (``model.exclude_zero``), which finds the zero op by its trait.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..layers.op_traits import ops_with
from ..utils.errors import UserError
from .space import SearchSpace


def check_exclusions(space: SearchSpace, exclude: Sequence[str]) -> None:
    """Raises a one-line ``UserError`` unless every name is an op of the space and one op is left."""
    for name in exclude:
        if name not in space.op_names:
            raise UserError(f"config key 'model.derive_exclude' names {name!r}, which is not an op of "
                            f"{space.name} (its ops: {', '.join(space.op_names)})")
    if set(space.op_names) <= set(exclude):
        raise UserError("config key 'model.derive_exclude' excludes every op; leave at least one out of it")


def derive_exclusions(space: SearchSpace, exclude: Sequence[str] = (), exclude_zero: bool = False) -> tuple[str, ...]:
    """The op names never derived: ``exclude`` (checked) and, with ``exclude_zero``, the space's zero ops.

    A space that declares no zero op has nothing more to exclude.
    """
    names = list(dict.fromkeys(exclude))
    if exclude_zero:
        names += [n for n in ops_with(space.op_traits(), zero=True) if n not in names]
    check_exclusions(space, names)
    return tuple(names)


def derive_with_caps(space: SearchSpace, probabilities: dict[str, torch.Tensor], rule: str | None = None,
                     max_skip: int = -1, max_parameter_free: int = -1, exclude: Sequence[str] = ()) -> Any:
    """Derives a genotype with at most ``max_skip`` skip connections and ``max_parameter_free``
    parameter-free ops (zero ops aside) per cell kind (-1 means no cap), and none of ``exclude``.

    Args:
        space: The search space (its ``derive_genotype`` and ``genotype_edges`` are used).
        probabilities: group -> ``[num_edges, num_ops]``.
        rule: The space's derivation rule (None: its default).
        max_skip: Cap on edges per group with an op declared ``skip``.
        max_parameter_free: Cap on edges per group with a ``parameter_free`` op that is not ``zero``
            (pools and skips).
        exclude: Op names never derived (see ``derive_exclusions``).

    Returns:
        The genotype.
    """
    caps = []
    traits = space.op_traits()
    if max_skip >= 0:
        caps.append((set(ops_with(traits, skip=True)), max_skip))
    if max_parameter_free >= 0:
        caps.append((set(ops_with(traits, parameter_free=True, zero=False)), max_parameter_free))
    probs = {g: p.detach().clone().double().cpu() for g, p in probabilities.items()}
    ops = list(space.op_names)
    if exclude:
        check_exclusions(space, exclude)
        for p in probs.values():  # below every allowed op's probability, so never the strongest
            p[:, [ops.index(name) for name in exclude]] = -2.0
    genotype = space.derive_genotype(probs, rule)
    if not caps:
        return genotype
    for _ in range(sum(p.numel() for p in probs.values())):  # each pass rules one choice out
        over = None
        edges = space.genotype_edges(genotype)
        for capped, cap in caps:
            for group in probs:
                used = [(probs[group][e, ops.index(op)].item(), e, op) for g, e, op in edges
                        if g == group and op in capped]
                if len(used) > cap:
                    over = (group, *min(used)[1:])
                    break
            if over:
                break
        if over is None:
            return genotype
        group, e, op = over
        probs[group][e, ops.index(op)] = -1.0  # never the strongest again
        genotype = space.derive_genotype(probs, rule)
    raise UserError("the derivation caps cannot be met in this space; raise model.max_skip / model.max_parameter_free")
