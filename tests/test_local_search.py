"""search.select=local_search: coordinate ascent on the supernet's accuracy of whole cells, started from the
op-marginal cell (nas/engine/selection.py)."""
import itertools
import json

import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.engine import selection
from nas.sampling.architecture import Architecture
from nas.spaces.derive import derive_with_caps
from nas.spaces.space import get_space
from nas.utils.errors import UserError

from selection_helpers import TINY, finished_search, quiet, run_train_search

LOCAL = ["search.select=local_search", "search.select_samples=2", "search.select_sweeps=3"]
NB201 = get_space("nb201")
OPS = list(NB201.op_names)
REAL = [k for k, op in enumerate(OPS) if op != "none"]


def toy_problem(interaction: float):
    """An NB201 'accuracy' with a per-edge part and an interaction between edges 0 and 1, the search's
    pieces for it, and the starting scores that favour op column 1 everywhere."""
    g = torch.Generator().manual_seed(0)
    value = torch.rand(6, len(OPS), generator=g)

    def accuracy(genotype) -> float:
        ops = [OPS.index(op) for _, _, op in NB201.genotype_edges(genotype)]
        bonus = interaction if (ops[0], ops[1]) == (REAL[-1], REAL[-1]) else 0.0
        return float(sum(value[e, k] for e, k in enumerate(ops))) + bonus

    arch = Architecture({"cell": (6, len(OPS))}, OPS)
    columns = selection.candidate_columns(arch, ["none"])
    start = {"cell": torch.full((6, len(OPS)), 0.1).index_fill_(1, torch.tensor([1]), 0.5)}

    def derive(scores):
        return derive_with_caps(NB201, scores, exclude=["none"])

    return accuracy, derive, columns, start


def every_cell():
    for ops in itertools.product(REAL, repeat=6):
        yield NB201._from_edge_ops([OPS[k] for k in ops])


def test_on_an_additive_accuracy_the_ascent_finds_the_best_cell_of_all_4096():
    accuracy, derive, columns, start = toy_problem(interaction=0.0)
    calls = []
    genotype, record = selection.local_search(lambda g: calls.append(g) or accuracy(g), derive, NB201.genotype_edges,
                                              start, columns, OPS, sweeps=5)
    assert accuracy(genotype) == pytest.approx(max(accuracy(c) for c in every_cell()))
    assert record["val_acc"] == pytest.approx(accuracy(genotype))
    assert record["val_acc"] > record["start_val_acc"]
    # one pass moves each edge to its best op; the second finds nothing to move and stops
    assert record["sweeps"] == 2
    assert record["evaluations"] == len(calls) == len({NB201.format(c) for c in calls})  # each cell once
    accs = [record["start_val_acc"]] + [m["val_acc"] for m in record["moves"]]
    assert all(b > a for a, b in zip(accs, accs[1:]))  # every move improves the cell


def test_the_ascent_completes_a_pair_of_ops_worth_only_together_and_ends_at_a_local_optimum():
    """A bonus only for one op on edges 0 and 1 together, which an average over random other edges would
    dilute: with the start holding one half of the pair the ascent adds the other, and no single-edge change
    improves the end."""
    accuracy, derive, columns, start = toy_problem(interaction=10.0)
    start["cell"][1, REAL[-1]] = 0.9  # edge 1 starts on the pair's op
    genotype, record = selection.local_search(accuracy, derive, NB201.genotype_edges, start, columns, OPS, sweeps=5)
    ops = [op for _, _, op in NB201.genotype_edges(genotype)]
    assert ops[0] == ops[1] == OPS[REAL[-1]]
    for e, k in itertools.product(range(6), REAL):  # no neighbour is better
        neighbour = NB201._from_edge_ops([OPS[k] if i == e else op for i, op in enumerate(ops)])
        assert accuracy(neighbour) <= accuracy(genotype) + 1e-9


def test_one_sweep_visits_each_edge_once_and_ties_keep_the_current_cell():
    _, derive, columns, start = toy_problem(interaction=0.0)
    calls = []
    genotype, record = selection.local_search(lambda g: calls.append(g) or 50.0, derive, NB201.genotype_edges,
                                              start, columns, OPS, sweeps=1)
    assert record["moves"] == [] and record["sweeps"] == 1
    assert NB201.format(genotype) == NB201.format(derive(start))
    assert len(calls) == 1 + 6 * (len(REAL) - 1)  # the start, then 3 other ops on each of 6 edges


def test_pinning_an_op_on_a_darts_edge_changes_that_op_and_keeps_the_chosen_inputs():
    darts = get_space("darts")
    g = torch.Generator().manual_seed(1)
    scores = {group: torch.rand(14, len(darts.op_names), generator=g) for group in ("normal", "reduce")}
    before = darts.genotype_edges(derive_with_caps(darts, scores, exclude=["none"]))
    group, row, op = before[3]
    column = next(k for k, name in enumerate(darts.op_names) if name not in ("none", op))
    after = darts.genotype_edges(derive_with_caps(darts, selection.pin_op(scores, group, row, column), exclude=["none"]))
    assert [(gr, r) for gr, r, _ in after] == [(gr, r) for gr, r, _ in before]
    assert after[3] == (group, row, darts.op_names[column])
    assert [e for i, e in enumerate(after) if i != 3] == [e for i, e in enumerate(before) if i != 3]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny search that selects by local search, run to its end in a run directory."""
    return finished_search(tmp_path_factory, "local", LOCAL)


def test_a_search_exports_the_end_of_the_ascent_from_the_op_marginal_cell(finished):
    searcher, out = finished
    last = searcher.history[-1]
    record = last["local_search"]
    scores = selection.marginal_scores(last["op_marginals"], searcher.supernet.architecture)
    assert record["start"] == searcher.space.format(searcher.derive(scores))
    assert last["genotype"] == searcher.space.format(searcher.exported_genotype())
    # the exported cell's val accuracy is what the ascent measured for it, and no start was better
    assert last["val_acc"] == pytest.approx(record["val_acc"])
    assert record["val_acc"] >= record["start_val_acc"]
    assert record["val_acc"] == pytest.approx(searcher.evaluate(searcher.data.val_eval)[1])
    for _, _, op in searcher.space.genotype_edges(searcher.exported_genotype()):
        assert op != "none"
    assert "selected_by: local_search" in (out / "genotype.yaml").read_text()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "local_search" in lines[-1] and all("local_search" not in m for m in lines[:-1])


def test_a_finished_local_search_survives_a_resume(finished):
    searcher, out = finished
    again = build_searcher(build_config({}, TINY + LOCAL), out, log=quiet)
    again.resume(out / "checkpoint.pt")
    assert again.space.format(again.exported_genotype()) == searcher.history[-1]["genotype"]


@pytest.mark.parametrize("overrides,message", [
    (LOCAL[:1] + ["search.select_sweeps=0"], "search.select_sweeps"),
    (LOCAL[:1] + ["search.shrink_every=1"], "local_search compares the ops an edge still holds"),
])
def test_bad_local_search_settings_get_one_line(overrides, message):
    with pytest.raises(UserError) as info:
        build_config({}, TINY + overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_train_search_says_where_the_ascent_started_and_what_it_gained(tmp_path):
    proc, final = run_train_search(tmp_path / "run", *LOCAL, "search.shrink_every=0")
    assert f"derived genotype: {final['genotype']}" in proc.stdout
    assert f"selected by local search on the supernet from the op-marginal cell {final['local_search']['start']}" \
        in proc.stdout
