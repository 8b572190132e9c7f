"""search.select=op_marginals: the final cell chosen by the supernet's accuracy of each op (nas/engine/selection.py)."""
import json

import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.engine import selection
from nas.sampling.architecture import Architecture
from nas.utils.errors import UserError

from selection_helpers import TINY, finished_search, quiet, run_train_search

SELECT = ["search.select=op_marginals", "search.select_samples=3"]
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny search that selects by op marginals, run to its end in a run directory."""
    return finished_search(tmp_path_factory, "select", SELECT)


def by_hand(searcher, row: int, op: str, k: int, samples: int = 3) -> float:
    """The k-th marginal accuracy of ``op`` on edge ``row``, from the draws rebuilt independently."""
    g = torch.Generator().manual_seed(searcher.seed)
    cands = [c for c, name in enumerate(OPS) if name != "none"]
    draws = [[cands[int(torch.randint(len(cands), (1,), generator=g))] for _ in range(6)] for _ in range(samples)]
    edges = [("cell", r, op if r == row else OPS[c]) for r, c in enumerate(draws[k])]
    return searcher.evaluate(searcher.data.val_eval, searcher.space.parse(
        "|" + "|+|".join("|".join(f"{e[2]}~{j}" for e, j in zip(edges[a:b], range(b - a)))
                         for a, b in ((0, 1), (1, 3), (3, 6))) + "|"))[1]


def test_the_exported_cell_is_the_argmax_of_the_marginal_accuracies(finished):
    searcher, out = finished
    last = searcher.history[-1]
    table = last["op_marginals"]["cell"]
    assert len(table) == 6
    for accs in table:  # `none` is never derived here, so never measured
        assert sorted(accs) == sorted(OPS[1:]) and all(0.0 <= a <= 100.0 for a in accs.values())
    derived = {r: op for _, r, op in searcher.space.genotype_edges(searcher.exported_genotype())}
    for r, accs in enumerate(table):
        assert accs[derived[r]] == max(accs.values())
    record = (out / "genotype.yaml").read_text()
    assert "selected_by: op_marginals" in record and last["genotype"] in record
    assert last["logits_genotype"] == searcher.space.format(searcher.logits_genotype())
    # the epoch's val accuracy is the selected cell's, as the experiment and the report read it
    assert last["val_acc"] == pytest.approx(searcher.evaluate(searcher.data.val_eval)[1])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "op_marginals" in lines[-1] and all("op_marginals" not in m for m in lines[:-1])  # once, at the end
    assert lines[-1]["selection_time"] > 0 and all("selection_time" not in m for m in lines[:-1])


def test_each_marginal_is_the_supernet_accuracy_of_its_architecture_on_shared_draws(finished):
    """Recomputed by hand: edge 2 holding nor_conv_3x3 in the second drawn architecture; and the ops of
    one edge are measured on the same draws of the other edges (common random numbers)."""
    searcher, _ = finished
    columns = selection.candidate_columns(searcher.supernet.architecture, ["none"])
    seen = []

    def accuracy(edges):
        seen.append(edges)
        return searcher._evaluate(searcher.data.val_eval, searcher.supernet.genotype_sample(edges))[1]

    marginals = selection.op_marginals(accuracy, searcher.supernet.architecture, columns, 3, searcher.seed)
    table = selection.marginal_table(marginals, columns, OPS)
    assert table == searcher.history[-1]["op_marginals"]
    assert marginals["cell"][2]["nor_conv_3x3"][1] == pytest.approx(by_hand(searcher, 2, "nor_conv_3x3", 1))
    first_edge = seen[:12]  # edge 0: 4 ops x 3 draws, draw-major within each op
    others = [tuple(x for x in e if x[1] != 0) for e in first_edge]
    assert others[0:3] == others[3:6] == others[6:9] == others[9:12]


def test_candidates_follow_masks_and_exclusions_and_scores_never_prefer_an_unmeasured_op():
    arch = Architecture({"cell": (3, 5)}, OPS, allowed={"cell": torch.tensor(
        [[1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)})
    columns = selection.candidate_columns(arch, ["none"])
    assert columns == {"cell": [[1, 2, 3, 4], [2], [2, 3]]}
    marginals = selection.op_marginals(lambda edges: 10.0 * sum(OPS.index(op) for _, _, op in edges),
                                       arch, columns, samples=2, seed=0)
    assert marginals["cell"][1] == {}  # one candidate: nothing to compare, nothing evaluated
    table = selection.marginal_table(marginals, columns, OPS)
    assert table["cell"][1] == {"nor_conv_1x1": None}
    scores = selection.marginal_scores(table, arch)["cell"]
    assert scores[1].tolist() == [-1.0, -1.0, 1.0, -1.0, -1.0]
    assert scores[2, 3] > scores[2, 2] > scores[2, 0]  # nor_conv_3x3 scored higher by the toy accuracy
    assert scores[0].argmax().item() == 4


def test_a_finished_selection_survives_a_resume_and_an_extended_run_selects_again(finished):
    searcher, out = finished
    again = build_searcher(build_config({}, TINY + SELECT), out, log=quiet)
    again.resume(out / "checkpoint.pt")
    assert again.space.format(again.exported_genotype()) == searcher.history[-1]["genotype"]
    longer = build_config({}, TINY + SELECT + ["search.epochs=3"])
    extended = build_searcher(longer, out, log=quiet)
    extended.resume(out / "checkpoint.pt")
    assert extended._selected is None  # the old end is no longer the end
    assert extended.space.format(extended.exported_genotype()) == extended.space.format(extended.logits_genotype())
    extended.run()
    assert extended.history[-1]["epoch"] == 3 and "op_marginals" in extended.history[-1]
    assert "op_marginals" in extended.history[1]  # the first end's record stays in the history


@pytest.mark.parametrize("overrides,message", [
    (["search.select=best"], "'search.select' must be one of logits, op_marginals, local_search, proxy_top, got 'best'"),
    (["search.select=op_marginals", "search.select_samples=0"], "search.select_samples"),
    (["search.select=op_marginals", "search.shrink_every=1"], "set search.shrink_every=0 or search.shrink_to=2"),
])
def test_bad_selection_settings_get_one_line(overrides, message):
    with pytest.raises(UserError) as info:
        build_config({}, TINY + overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_shrinking_to_two_ops_then_selecting_measures_only_what_is_left(tmp_path):
    cfg = build_config({}, TINY + SELECT + ["search.shrink_every=1", "search.shrink_to=2", "search.epochs=3"])
    searcher = build_searcher(cfg, tmp_path, log=quiet)
    searcher.run()
    table = searcher.history[-1]["op_marginals"]["cell"]
    allowed = searcher.supernet.architecture.allowed_cell
    for row, accs in enumerate(table):
        assert sorted(accs) == sorted(OPS[k] for k in range(5) if allowed[row, k] and OPS[k] != "none")
        assert len(accs) == 2


def test_train_search_says_what_was_selected_and_what_the_logits_derive(tmp_path):
    proc, final = run_train_search(tmp_path / "run", *SELECT, "search.shrink_every=0")
    assert f"derived genotype: {final['genotype']}" in proc.stdout
    assert f"the logits derive {final['logits_genotype']}" in proc.stdout
    assert "selected_by: op_marginals" in (tmp_path / "run" / "genotype.yaml").read_text()
