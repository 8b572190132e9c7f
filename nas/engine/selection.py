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

``search.select=local_search`` then refines that cell on the same judge, a
whole cell at a time: marginals average each op over random other edges, so
they miss what an op is worth next to the ops the cell actually holds (an op on
an edge whose node feeds nothing but pools, say). Starting from the marginals'
cell, each edge in turn tries every candidate op with the other edges fixed,
and the cell moves to the op of highest val accuracy if it beats the current
cell; up to ``search.select_sweeps`` passes over the edges, stopping at a pass
that moves nothing (coordinate ascent; the local search that White et al.,
UAI 2021, found strong on NAS benchmarks, here on the supernet's accuracy).
Cost: at most ``sweeps x sum over kept edges of (candidates - 1)`` more
evaluations, every cell evaluated once.

``search.select=proxy_top`` uses two judges whose errors differ. A data-free
zero-cost proxy (``nas.engine.zero_cost``; synflow by default) ranks untrained
networks well overall but prefers the most convolutions outright; the trained
supernet ranks cells with a bias towards parameter-free ops, which train fastest
on shared weights (``docs/search_quality.md``). The proxy scores every derivable
cell (``candidate_cells``: all of them when there are at most
``search.select_pool``, else that many drawn), and the supernet's val accuracy
chooses among the ``search.select_top`` it ranks highest (``proxy_top``).
Cost: ``pool`` proxy scores (tens of ms each for a small network on the CPU)
and ``top`` evaluations of the val split.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable

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


# A pinned op beats its edge's best score by this much: it becomes the edge's op while the edge's strength
# (the DARTS rule's choice of inputs reads the best score of an edge) moves by no more than that.
PIN_MARGIN = 1e-6


def pin_op(scores: dict[str, torch.Tensor], group: str, row: int, column: int) -> dict[str, torch.Tensor]:
    """A copy of ``scores`` in which op ``column`` is the highest of edge ``row`` of ``group``, by ``PIN_MARGIN``."""
    out = {g: t.clone() for g, t in scores.items()}
    others = torch.cat([out[group][row, :column], out[group][row, column + 1:]])
    out[group][row, column] = (others.max() if len(others) else out[group][row, column]) + PIN_MARGIN
    return out


def local_search(evaluate: Callable[[Any], float], derive: Callable[[dict[str, torch.Tensor]], Any],
                 edges_of: Callable[[Any], list[tuple[str, int, str]]], scores: dict[str, torch.Tensor],
                 columns: dict[str, list[list[int]]], op_names: list[str], sweeps: int) -> tuple[Any, dict]:
    """Coordinate ascent on the supernet's accuracy of whole cells, from the cell ``derive(scores)``.

    Each pass visits the edges the current cell keeps, in order; on each it derives the cell with every
    other candidate op pinned there (``pin_op``: the space's rule, exclusions and caps still apply, so the
    cell evaluated is the cell that would be exported) and moves to the most accurate one if it beats the
    current cell. Ties keep the current cell. Each distinct cell is evaluated once.

    Args:
        evaluate: Val accuracy (%) of a genotype on the supernet.
        derive: The search's derivation of a genotype from scores (rule, exclusions, caps).
        edges_of: ``space.genotype_edges``: ``(group, logit row, op)`` per kept op.
        scores: group -> ``[edges, ops]`` scores of the starting cell (``marginal_scores``).
        columns: ``candidate_columns``: the op columns each edge may take.
        op_names: The space's op names (column order).
        sweeps: Passes over the edges at most.

    Returns:
        The final genotype and a record: the start's accuracy, each move, the evaluations and passes made.
    """
    seen: dict[tuple, float] = {}

    def accuracy(genotype: Any) -> float:
        key = tuple(edges_of(genotype))
        if key not in seen:
            seen[key] = float(evaluate(genotype))
        return seen[key]

    current = derive(scores)
    record: dict = {"start_val_acc": accuracy(current), "moves": [], "sweeps": 0}
    for _ in range(sweeps):
        record["sweeps"] += 1
        moved = False
        for group, row, _ in edges_of(current):
            # the edge's op now: a move on an earlier edge may have changed others under a cap
            ops_now = [o for g, r, o in edges_of(current) if (g, r) == (group, row)]
            if not ops_now or len(columns[group][row]) < 2:
                continue
            op = ops_now[0]
            best = (accuracy(current), current, scores, op)
            for column in columns[group][row]:
                if op_names[column] == op:
                    continue
                pinned = pin_op(scores, group, row, column)
                candidate = derive(pinned)
                acc = accuracy(candidate)
                if acc > best[0]:
                    best = (acc, candidate, pinned, op_names[column])
            if best[1] is not current:
                record["moves"].append({"edge": f"{group}[{row}]", "from": op, "to": best[3],
                                        "val_acc": round(best[0], 4)})
                _, current, scores, _ = best
                moved = True
        if not moved:
            break
    record["val_acc"] = accuracy(current)
    record["evaluations"] = len(seen)
    return current, record


def candidate_cells(derive: Callable[[dict[str, torch.Tensor]], Any], edges_of: Callable[[Any], list],
                    columns: dict[str, list[list[int]]], shapes: dict[str, tuple[int, int]], limit: int,
                    seed: int = 0) -> list[Any]:
    """Distinct cells the search can export: every one when at most ``limit`` combinations exist, else draws.

    With at most ``limit`` combinations of one candidate op per edge, each combination is derived from
    one-hot scores (NAS-Bench-201: every cell). Otherwise ``limit`` score tables are drawn uniformly over the
    candidates and derived, so the space's rule still decides which edges a cell keeps (DARTS: the top-2
    inputs per node); duplicates are dropped. Order: enumeration or draw order.

    Args:
        derive: The search's derivation of a genotype from scores (rule, exclusions, caps).
        edges_of: ``space.genotype_edges``, which identifies a cell.
        columns: ``candidate_columns``: the op columns each edge may take.
        shapes: group -> ``(edges, ops)`` of its score table.
        limit: Combinations enumerated at most, or draws made.
        seed: Seeds the draws (a dedicated generator: the training's random streams are untouched).
    """
    per_edge = [(group, row, cols) for group, rows in columns.items() for row, cols in enumerate(rows) if cols]
    combinations = math.prod(len(cols) for _, _, cols in per_edge)
    tables = []
    if combinations <= limit:
        for choice in itertools.product(*(cols for _, _, cols in per_edge)):
            scores = {group: torch.full(shape, -1.0) for group, shape in shapes.items()}
            for (group, row, _), column in zip(per_edge, choice):
                scores[group][row, column] = 1.0
            tables.append(scores)
    else:
        g = torch.Generator().manual_seed(seed)
        for _ in range(limit):
            scores = {group: torch.full(shape, -1.0) for group, shape in shapes.items()}
            for group, row, cols in per_edge:
                scores[group][row, cols] = torch.rand(len(cols), generator=g)
            tables.append(scores)
    cells, seen = [], set()
    for scores in tables:
        genotype = derive(scores)
        key = tuple(edges_of(genotype))
        if key not in seen:
            seen.add(key)
            cells.append(genotype)
    return cells


def proxy_top(evaluate: Callable[[Any], float], proxy: Callable[[Any], float], cells: list[Any],
              top: int) -> tuple[Any, list[dict]]:
    """The supernet's most accurate of the ``top`` cells a zero-cost proxy ranks highest.

    Args:
        evaluate: Val accuracy (%) of a genotype on the supernet.
        proxy: Zero-cost score of a genotype's network (higher: predicted better).
        cells: The candidates (``candidate_cells``).
        top: How many of the proxy's best the supernet judges.

    Returns:
        The chosen genotype and, for each judged cell in the proxy's order, ``{"genotype", "proxy",
        "val_acc"}`` (genotype objects; the caller formats them). Ties in either judge keep the earlier cell.
    """
    scored = sorted(((proxy(c), i, c) for i, c in enumerate(cells)), key=lambda t: (-t[0], t[1]))
    judged = [{"genotype": c, "proxy": score, "val_acc": float(evaluate(c))} for score, _, c in scored[:top]]
    best = max(range(len(judged)), key=lambda k: (judged[k]["val_acc"], -k))
    return judged[best]["genotype"], judged
