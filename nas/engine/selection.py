"""Selecting the final architecture by the supernet's accuracy of each op (``search.select=op_marginals``).

A GDAS search derives its cell from the logits. Where the logit gradient is at
its noise floor (``docs/search_quality.md``), the logits say little, while the
trained supernet's accuracy of architectures still differs by op: DARTS-PT
(Wang et al., ICLR 2021) selects by the supernet's accuracy for the same reason.
For a supernet that runs one op per edge, the measure here is an op's
**marginal accuracy**: the supernet's val accuracy averaged over ``samples``
architectures in which that edge holds that op and every other edge holds one
op drawn uniformly from its candidates. The same draws of the other edges serve
every op of an edge (common random numbers), so the ops of an edge are compared
on the same architectures; a dedicated generator draws them, so the training's
random streams are untouched and a resumed run selects the same cell.
The space's derivation rule then reads the marginal accuracies as it reads
probabilities (argmax per edge on NAS-Bench-201; top-2 inputs per node on DARTS).

Cost: ``sum over edges of candidates x samples`` evaluations of the val split,
once, at the end of the search.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from nas.sampling.architecture import Architecture

# group -> per edge -> op name -> its marginal accuracies (%), one per drawn architecture
Marginals = dict[str, list[dict[str, list[float]]]]
# group -> per edge -> op name -> mean marginal accuracy (%), or None for an edge's only candidate
MarginalTable = dict[str, list[dict[str, float | None]]]


def candidate_columns(arch: Architecture, exclude: Iterable[str] = ()) -> dict[str, list[list[int]]]:
    """group -> per edge the op columns still allowed (masks, shrinking) and not in ``exclude``."""
    never = set(exclude)
    out = {}
    for group, logits in arch.logits.items():
        allowed = getattr(arch, f"allowed_{group}", None)
        out[group] = [[k for k, op in enumerate(arch.op_names)
                       if (allowed is None or bool(allowed[row, k])) and op not in never]
                      for row in range(logits.shape[0])]
    return out


def op_marginals(evaluate: Callable[[list[tuple[str, int, str]]], float], arch: Architecture,
                 columns: dict[str, list[list[int]]], samples: int, seed: int = 0) -> Marginals:
    """Marginal accuracy of every candidate op of every edge that has more than one candidate.

    Args:
        evaluate: Accuracy (%) of the architecture given as ``(group, edge, op name)`` for every edge
            (``Supernet.genotype_sample`` of it, run on the val split).
        arch: The supernet's architecture (op names, logit shapes).
        columns: ``candidate_columns(arch, ...)``.
        samples: Architectures drawn per (edge, op).
        seed: Seeds the draws of the other edges.
    """
    g = torch.Generator().manual_seed(seed)
    # draws[k][group][edge]: the op column that edge holds in the k-th architecture, shared by every op measured
    draws = [{group: [rows[int(torch.randint(len(rows), (1,), generator=g))] for rows in per_edge]
              for group, per_edge in columns.items()} for _ in range(samples)]
    result: Marginals = {}
    for group, per_edge in columns.items():
        result[group] = []
        for row, candidates in enumerate(per_edge):
            accs: dict[str, list[float]] = {}
            for column in (candidates if len(candidates) > 1 else []):
                name = arch.op_names[column]
                accs[name] = [evaluate([(gr, r, arch.op_names[column if (gr, r) == (group, row) else c])
                                        for gr, cols in draw.items() for r, c in enumerate(cols)])
                              for draw in draws]
            result[group].append(accs)
    return result


def marginal_table(marginals: Marginals, columns: dict[str, list[list[int]]], op_names: list[str]) -> MarginalTable:
    """Mean marginal accuracy per edge and op (what ``metrics.jsonl`` keeps); an edge's only candidate: None."""
    table: MarginalTable = {}
    for group, per_edge in marginals.items():
        table[group] = []
        for row, accs in enumerate(per_edge):
            if accs:
                table[group].append({op: round(sum(v) / len(v), 4) for op, v in accs.items()})
            else:
                table[group].append({op_names[c]: None for c in columns[group][row]})
    return table


def marginal_scores(table: MarginalTable, arch: Architecture) -> dict[str, torch.Tensor]:
    """group -> ``[edges, ops]`` scores for the space's derivation rule: mean accuracy / 100, an only
    candidate 1, every op not measured -1 (so never preferred to a measured one)."""
    scores = {}
    for group, per_edge in table.items():
        t = torch.full(arch.logits[group].shape, -1.0, dtype=torch.float32)
        for row, accs in enumerate(per_edge):
            for op, mean in accs.items():
                t[row, arch.op_names.index(op)] = 1.0 if mean is None else mean / 100.0
        scores[group] = t
    return scores
