"""search.select=proxy_top: a zero-cost proxy ranks every derivable cell, the trained supernet chooses among the
proxy's best (nas/engine/selection.py, nas/engine/zero_cost.py)."""
import json

import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.engine import selection, zero_cost
from nas.engine.search import PROXY_INIT_SEED
from nas.sampling.architecture import Architecture
from nas.spaces.derive import derive_with_caps
from nas.spaces.space import get_space
from nas.utils.errors import UserError

from selection_helpers import TINY, finished_search, quiet, run_train_search

PROXY_TOP = ["search.select=proxy_top", "search.select_pool=24", "search.select_top=5"]
NB201 = get_space("nb201")
OPS = list(NB201.op_names)


def nb201_pieces(exclude=("none",)):
    arch = Architecture({"cell": (6, len(OPS))}, OPS)
    columns = selection.candidate_columns(arch, exclude)

    def derive(scores):
        return derive_with_caps(NB201, scores, exclude=list(exclude))

    return derive, columns, {"cell": (6, len(OPS))}


def test_a_small_space_is_enumerated_whole_and_a_large_one_is_drawn_through_its_rule():
    derive, columns, shapes = nb201_pieces()
    cells = selection.candidate_cells(derive, NB201.genotype_edges, columns, shapes, limit=4096)
    strings = [NB201.format(c) for c in cells]
    assert len(strings) == len(set(strings)) == 4 ** 6  # every none-free NB201 cell, once
    assert not any("none" in s for s in strings)
    drawn = selection.candidate_cells(derive, NB201.genotype_edges, columns, shapes, limit=200, seed=1)
    assert 150 < len(drawn) <= 200 and set(map(NB201.format, drawn)) <= set(strings)
    again = selection.candidate_cells(derive, NB201.genotype_edges, columns, shapes, limit=200, seed=1)
    assert list(map(NB201.format, again)) == list(map(NB201.format, drawn))  # seeded draws

    darts = get_space("darts")
    arch = Architecture({g: (14, len(darts.op_names)) for g in ("normal", "reduce")}, list(darts.op_names))
    cells = selection.candidate_cells(lambda s: derive_with_caps(darts, s, exclude=["none"]), darts.genotype_edges,
                                      selection.candidate_columns(arch, ["none"]),
                                      {g: (14, len(darts.op_names)) for g in ("normal", "reduce")}, limit=30)
    assert len(cells) == 30  # 8^28 combinations: drawn, and 30 draws never repeat a cell
    for cell in cells:  # the DARTS rule decides the edges: two inputs per intermediate node, no zero op
        edges = darts.genotype_edges(cell)
        assert len(edges) == 2 * 2 * 4 and "none" not in {op for _, _, op in edges}


def test_the_supernet_chooses_among_the_proxys_top_and_ties_keep_the_proxys_order():
    derive, columns, shapes = nb201_pieces()
    cells = selection.candidate_cells(derive, NB201.genotype_edges, columns, shapes, limit=4096)

    def proxy(genotype):  # stands for "more convolutions score higher"
        return float(sum(op.startswith("nor_conv") for _, _, op in NB201.genotype_edges(genotype)))

    def accuracy(genotype):  # stands for the supernet's liking for a skip on the input edge
        return 50.0 + 10.0 * (NB201.genotype_edges(genotype)[0][2] == "skip_connect")

    evaluated = []
    # the top 100: the 64 all-convolution cells, then 36 with five (the first of them, in enumeration order,
    # hold a skip on the input edge)
    chosen, judged = selection.proxy_top(lambda g: evaluated.append(g) or accuracy(g), proxy, cells, top=100)
    ranked = sorted(cells, key=lambda c: -proxy(c))  # stable: the enumeration order among equals
    assert [NB201.format(j["genotype"]) for j in judged] == [NB201.format(c) for c in ranked[:100]]
    assert len(evaluated) == 100  # the supernet judges the top only
    assert [j["proxy"] for j in judged] == sorted((j["proxy"] for j in judged), reverse=True)
    best = max(accuracy(c) for c in ranked[:100])
    first_best = next(c for c in ranked[:100] if accuracy(c) == best)
    assert NB201.format(chosen) == NB201.format(first_best)
    assert best == 60.0 and NB201.genotype_edges(chosen)[0][2] == "skip_connect"
    assert proxy(chosen) == max(proxy(c) for c in cells if accuracy(c) == best)  # the proxy still counts


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny search that selects by proxy_top, run to its end in a run directory."""
    return finished_search(tmp_path_factory, "proxy_top", PROXY_TOP)


def test_a_search_exports_the_supernets_best_of_the_synflow_top(finished):
    searcher, out = finished
    record = searcher.history[-1]["proxy_top"]
    arch = searcher.supernet.architecture
    cells = selection.candidate_cells(searcher.derive, searcher.space.genotype_edges,
                                      selection.candidate_columns(arch, ["none"]),
                                      {g: tuple(t.shape) for g, t in arch.logits.items()}, 24, searcher.seed)
    assert record["pool"] == len(cells) and len(record["judged"]) == 5

    def synflow(genotype):  # the proxy recomputed here: the stand-alone network at the fixed init, in float64
        torch.manual_seed(PROXY_INIT_SEED)
        net = searcher.space.build_network(genotype, num_classes=searcher.data.num_classes,
                                           in_channels=searcher.data.in_channels, C=4, N=1)
        return zero_cost.synflow(net, torch.zeros(1, searcher.data.in_channels, 8, 8), None)

    scores = sorted((synflow(c) for c in cells), reverse=True)
    assert [j["proxy"] for j in record["judged"]] == pytest.approx(scores[:5], rel=1e-9)
    for j in record["judged"]:  # each judged cell's val accuracy is the supernet's, re-measured
        assert j["val_acc"] == pytest.approx(searcher.evaluate(searcher.data.val_eval,
                                                               searcher.space.parse(j["genotype"]))[1], abs=1e-3)
    best = max(j["val_acc"] for j in record["judged"])
    exported = searcher.space.format(searcher.exported_genotype())
    assert exported == next(j["genotype"] for j in record["judged"] if j["val_acc"] == best)
    assert record["judged"][record["proxy_rank"] - 1]["genotype"] == exported
    assert "none" not in exported
    assert "selected_by: proxy_top" in (out / "genotype.yaml").read_text()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "proxy_top" in lines[-1] and all("proxy_top" not in m for m in lines[:-1])
    assert "op_marginals" not in lines[-1]  # the marginals are not measured for it


def test_a_finished_proxy_top_selection_survives_a_resume(finished):
    searcher, out = finished
    again = build_searcher(build_config({}, TINY + PROXY_TOP), out, log=quiet)
    again.resume(out / "checkpoint.pt")
    assert again.space.format(again.exported_genotype()) == searcher.history[-1]["genotype"]


def test_scoring_a_cell_leaves_the_training_random_streams_alone(finished):
    searcher, _ = finished
    state = torch.get_rng_state()
    first = searcher._proxy_score(searcher.exported_genotype())
    assert torch.equal(torch.get_rng_state(), state)
    assert searcher._proxy_score(searcher.exported_genotype()) == first  # the same init every time


@pytest.mark.parametrize("overrides,message", [
    (PROXY_TOP[:1] + ["search.select_proxy=naswot"], "'search.select_proxy' must be one of synflow, params"),
    (PROXY_TOP[:1] + ["search.select_top=0"], "search.select_top"),
    (PROXY_TOP[:1] + ["search.select_pool=0"], "search.select_pool"),
])
def test_bad_proxy_top_settings_get_one_line(overrides, message):
    with pytest.raises(UserError) as info:
        build_config({}, TINY + overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_train_search_says_which_of_the_proxys_cells_the_supernet_chose(tmp_path):
    proc, final = run_train_search(tmp_path / "run", *PROXY_TOP, "search.select_proxy=params", "search.shrink_every=0")
    record = final["proxy_top"]
    assert f"derived genotype: {final['genotype']}" in proc.stdout
    assert f"selected by the supernet among the 5 of {record['pool']} cells params ranks highest" in proc.stdout
    assert record["proxy"] == "params"
    assert all(j["proxy"] > 0 and j["proxy"] == int(j["proxy"]) for j in record["judged"])  # parameter counts
