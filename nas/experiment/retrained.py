"""Reading cells that were retrained: the directories ``python -m nas.experiment`` writes.

A cell directory holds ``genotype.yaml`` and one ``retrain-seed<r>/final.json`` per
retraining (the experiment's searched and random cells alike). The benchmarks that
judge cells against their retrained accuracy (``benchmarks/search_diagnosis.py``,
``benchmarks/cell_judges.py``) read them here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..layers.op_traits import ops_with
from ..spaces.genotype import load_genotype
from ..utils.errors import UserError


def read_retrained(dirs: Iterable[Path]) -> list[dict]:
    """One row per distinct cell found as ``DIR/<cell>/genotype.yaml`` under any of ``dirs``.

    A cell found in several places counts once (its first place, in sorted order, names it), each
    retraining seed once (a seed retrained in two places is the same run); cells without a finished
    retraining are left out.

    Returns:
        Rows with ``cell`` (the genotype string), ``where`` (its first directory), ``space``,
        ``genotype``, ``retrains``, ``zero_free`` (holds none of the space's zero ops) and the
        retrained ``val_acc`` and ``test_acc`` means.

    Raises:
        UserError: a path that is not a directory, or a ``final.json`` that cannot be read.
    """
    cells: dict[str, dict] = {}
    for root in dirs:
        if not root.is_dir():
            raise UserError(f"--retrained {str(root)!r} is not a directory; pass a run directory of nas.experiment")
        for path in sorted(root.glob("*/genotype.yaml")):
            space, genotype = load_genotype(path)
            name = space.format(genotype)
            row = cells.setdefault(name, {"cell": name, "where": str(path.parent), "space": space,
                                          "genotype": genotype, "retrains": {}})
            for final in sorted(path.parent.glob("retrain-seed*/final.json")):
                seed = final.parent.name.removeprefix("retrain-seed")
                try:
                    record = json.loads(final.read_text())
                except (OSError, ValueError) as e:
                    raise UserError(f"{str(final)!r} is not a readable final.json ({e}); rerun that retraining "
                                    "or remove its directory") from None
                if record.get("val_acc") is not None:
                    row["retrains"].setdefault(seed, (record["val_acc"], record["test_acc"]))
    rows = []
    for row in cells.values():
        runs = list(row.pop("retrains").values())
        if not runs:
            continue
        zero_ops = set(ops_with(row["space"].op_traits(), zero=True))
        edges = row["space"].genotype_edges(row["genotype"])
        row.update(retrains=len(runs), zero_free=not any(op in zero_ops for _, _, op in edges),
                   val_acc=sum(r[0] for r in runs) / len(runs), test_acc=sum(r[1] for r in runs) / len(runs))
        rows.append(row)
    return rows
