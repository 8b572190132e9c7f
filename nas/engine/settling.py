"""Per-edge settling: whether each edge's derived op has stopped changing and is confidently chosen.

An edge has *settled* at epoch ``t`` (epochs counted from 1) when

* its derived op (what derivation keeps on it: the op, ``a+b`` for an edge that
  keeps two, ``null`` for an edge the space's rule drops) has been the same for
  the last ``required_stable_epochs(t, fraction) = max(1, ceil(fraction * t))``
  epochs (``search.settle_epochs_fraction``, default 0.25: the last quarter of
  the epochs so far), and
* its top probability is at least ``search.settle_probability`` (default 0.5).

The top op of an edge is its most probable op among those derivation can pick
(ops in ``model.derive_exclude`` and ops the space's rule never derives, such
as DARTS's ``none``, are left out); ``margin`` is the top probability minus the
runner-up's among the same ops. ``stable_epochs`` counts consecutive epochs,
up to this one, with the same derived op. The derived cell has been unchanged
for ``min(stable_epochs)`` epochs (every edge kept its op).

Everything here is a pure function of the epoch's probabilities, the derived
ops and the previous epoch's record, so the record of epoch ``t`` follows from
``metrics.jsonl`` alone and a resumed run continues it exactly.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

DEFAULT_PROBABILITY = 0.5
DEFAULT_EPOCHS_FRACTION = 0.25


def required_stable_epochs(epoch: int, fraction: float) -> int:
    """Epochs an edge's derived op must have held at epoch ``epoch`` (1-based): ``max(1, ceil(fraction * epoch))``."""
    return max(1, math.ceil(round(fraction * epoch, 9)))  # round: 0.25 * 4 must be 1, not 1.0000000001


def derived_ops(space: Any, genotype: Any, shapes: dict[str, int]) -> dict[str, list[str | None]]:
    """group -> per edge the op(s) ``genotype`` keeps there: ``op``, ``a+b`` (two ops), None (dropped).

    Args:
        space: The search space (``genotype_edges``).
        genotype: The derived genotype.
        shapes: group -> number of edges.
    """
    kept: dict[tuple[str, int], list[str]] = {}
    for group, edge, op in space.genotype_edges(genotype):
        kept.setdefault((group, edge), []).append(op)
    return {g: ["+".join(sorted(kept[g, e])) if (g, e) in kept else None for e in range(n)]
            for g, n in shapes.items()}


def underivable_ops(space: Any, shapes: dict[str, tuple[int, int]], rule: str | None = None) -> set[str]:
    """Op names the space's rule never derives (DARTS's ``none``), probed with each op strongest on every edge.

    Args:
        space: The search space.
        shapes: group -> ``(num_edges, num_ops)``.
        rule: The space's derivation rule (None: its default).
    """
    import torch

    names = list(space.op_names)
    never = set()
    for k, name in enumerate(names):
        probs = {}
        for group, (rows, cols) in shapes.items():
            p = torch.full((rows, cols), 0.5 / max(cols - 1, 1), dtype=torch.float64)
            p[:, k] = 0.5
            probs[group] = p
        try:
            genotype = space.derive_genotype(probs, rule)
        except Exception:  # noqa: BLE001  (a space that cannot take this probe: every op counts as derivable)
            return set()
        if not any(op == name for _, _, op in space.genotype_edges(genotype)):
            never.add(name)
    return never


def edge_top(row: Sequence[float], allowed: Sequence[int]) -> tuple[int, float, float]:
    """``(top column, top probability, margin to the runner-up)`` of one edge over the ``allowed`` columns.

    Ties go to the lower column (as ``argmax``); one allowed column has margin equal to its probability.
    """
    ranked = sorted(allowed, key=lambda k: (-row[k], k))
    top = ranked[0]
    runner_up = row[ranked[1]] if len(ranked) > 1 else 0.0
    return top, float(row[top]), float(row[top]) - float(runner_up)


def settling_record(probabilities: dict[str, list[list[float]]], derived: dict[str, list[str | None]],
                    op_names: Sequence[str], epoch: int, previous: dict | None = None,
                    probability: float = DEFAULT_PROBABILITY, epochs_fraction: float = DEFAULT_EPOCHS_FRACTION,
                    exclude: Sequence[str] = ()) -> dict:
    """The epoch's settling record (stored as ``settling`` in ``metrics.jsonl``).

    Args:
        probabilities: group -> ``[num_edges][num_ops]`` op probabilities of the epoch.
        derived: group -> per edge the derived op(s) (``derived_ops``).
        op_names: The op names, in column order.
        epoch: The epoch, counted from 1.
        previous: The previous epoch's record (None at the first epoch).
        probability: Top probability an edge needs to count as settled.
        epochs_fraction: Fraction of the epochs so far its derived op must have held.
        exclude: Op names the top op is never taken from (derive_exclude, ops the rule never derives).

    Returns:
        ``{"edges": {group: {"top_op", "top_p", "margin", "derived_op", "stable_epochs", "settled"}
        (lists per edge)}, "settled", "edges_total", "required_epochs", "cell_stable_epochs", "mean_top_p"}``.
    """
    allowed = [k for k, name in enumerate(op_names) if name not in set(exclude)] or list(range(len(op_names)))
    required = required_stable_epochs(epoch, epochs_fraction)
    before = (previous or {}).get("edges", {})
    edges, settled, tops, stables = {}, 0, [], []
    for group, rows in probabilities.items():
        old = before.get(group, {})
        old_ops, old_stable = old.get("derived_op"), old.get("stable_epochs")
        rec: dict[str, list] = {k: [] for k in ("top_op", "top_p", "margin", "derived_op", "stable_epochs", "settled")}
        for e, row in enumerate(rows):
            top, top_p, margin = edge_top(row, allowed)
            op = derived[group][e]
            same = old_ops is not None and e < len(old_ops) and old_ops[e] == op
            stable = old_stable[e] + 1 if same else 1
            ok = stable >= required and top_p >= probability
            rec["top_op"].append(op_names[top])
            rec["top_p"].append(round(top_p, 5))
            rec["margin"].append(round(margin, 5))
            rec["derived_op"].append(op)
            rec["stable_epochs"].append(stable)
            rec["settled"].append(ok)
            settled += ok
            tops.append(top_p)
            stables.append(stable)
        edges[group] = rec
    return {"edges": edges, "settled": settled, "edges_total": len(tops), "required_epochs": required,
            "cell_stable_epochs": min(stables) if stables else 0,
            "mean_top_p": round(sum(tops) / len(tops), 5) if tops else 0.0}


def describe(record: dict) -> str:
    """The epoch log's part: ``settled 3/6, mean top p 0.41, cell stable 12 ep``."""
    return (f"settled {record['settled']}/{record['edges_total']}, mean top p {record['mean_top_p']:.2f}, "
            f"cell stable {record['cell_stable_epochs']} ep")


def summary_line(record: dict, epochs: int) -> str:
    """The run's summary: ``settled: X/Y edges; derived cell unchanged for the last N of M epochs; mean top probability P``.

    Args:
        record: The last epoch's settling record.
        epochs: Epochs run so far (M).
    """
    return (f"settled: {record['settled']}/{record['edges_total']} edges; derived cell unchanged for the last "
            f"{record['cell_stable_epochs']} of {epochs} epochs; mean top probability {record['mean_top_p']:.3f}")
