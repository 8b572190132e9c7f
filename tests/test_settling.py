"""Per-edge settling (nas/settling.py): the definition on hand-made histories, and what a search writes."""
import json

import pytest
import torch
import yaml

import search_spaces  # noqa: F401
import train_search
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.utils.errors import UserError
from nas.engine.settling import (derived_ops, describe, required_stable_epochs, settling_record, summary_line, underivable_ops)

OPS = ["none", "a", "b"]
TINY = ["data.dataset=synthetic", "data.synthetic_size=48", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=3", "search.arch_lr=0.05", "seed=1", "deterministic=true",
        "search.report=false", "search.progress=false"]


@pytest.mark.parametrize("epoch, fraction, expected", [
    (1, 0.25, 1), (4, 0.25, 1), (5, 0.25, 2), (8, 0.25, 2), (9, 0.25, 3), (100, 0.25, 25),
    (7, 0.0, 1), (7, 1.0, 7), (3, 0.5, 2)])
def test_required_stable_epochs_is_the_last_fraction_of_the_epochs_so_far(epoch, fraction, expected):
    assert required_stable_epochs(epoch, fraction) == expected


def _chain(epochs, **kw):
    """Records of a hand-made history: each item is (probabilities of 'cell', derived ops of 'cell')."""
    records, prev = [], None
    for t, (probs, derived) in enumerate(epochs, start=1):
        prev = settling_record({"cell": probs}, {"cell": derived}, OPS, t, prev, **kw)
        records.append(prev)
    return records


def test_a_hand_made_history_gives_the_exact_record():
    history = [
        # edge 0: `none` is most likely but excluded, so its top op is `a` (0.3, margin 0.3 - 0.1)
        ([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], ["a", "b"]),
        ([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3]], ["a", "a"]),   # edge 1 changes its derived op
        ([[0.1, 0.55, 0.35], [0.1, 0.7, 0.2]], ["a", "a"]),
        ([[0.1, 0.8, 0.1], [0.1, 0.45, 0.45]], ["a", "a"]),  # edge 1: a tie goes to the lower column
        ([[0.0, 0.9, 0.1], [0.1, 0.8, 0.1]], ["a", "a"]),
    ]
    r = _chain(history, probability=0.5, epochs_fraction=0.25, exclude=["none"])
    cell = [x["edges"]["cell"] for x in r]
    assert cell[0] == {"top_op": ["a", "b"], "top_p": [0.3, 0.7], "margin": [0.2, 0.5], "derived_op": ["a", "b"],
                       "stable_epochs": [1, 1], "settled": [False, True]}
    assert [c["stable_epochs"] for c in cell] == [[1, 1], [2, 1], [3, 2], [4, 3], [5, 4]]
    assert [x["required_epochs"] for x in r] == [1, 1, 1, 1, 2]
    assert [c["settled"] for c in cell] == [[False, True], [True, True], [True, True], [True, False], [True, True]]
    assert [c["top_op"] for c in cell] == [["a", "b"], ["a", "a"], ["a", "a"], ["a", "a"], ["a", "a"]]
    assert cell[3]["margin"] == [0.7, 0.0]
    assert [x["settled"] for x in r] == [1, 2, 2, 1, 2]
    assert [x["edges_total"] for x in r] == [2] * 5
    assert [x["cell_stable_epochs"] for x in r] == [1, 1, 2, 3, 4]
    assert [x["mean_top_p"] for x in r] == [0.5, 0.55, 0.625, 0.625, 0.85]
    assert describe(r[2]) == "settled 2/2, mean top p 0.62, cell stable 2 ep"
    assert summary_line(r[-1], 5) == ("settled: 2/2 edges; derived cell unchanged for the last 4 of 5 epochs; "
                                      "mean top probability 0.850")


def test_an_edge_must_hold_its_op_for_the_required_epochs_and_a_change_restarts_the_count():
    # With fraction 1 the op must have held for every epoch so far: a change at epoch 3 unsettles it for good.
    history = [([[0.0, 0.9, 0.1]], ["a"]), ([[0.0, 0.9, 0.1]], ["a"]), ([[0.0, 0.1, 0.9]], ["b"]),
               ([[0.0, 0.1, 0.9]], ["b"])]
    r = _chain(history, probability=0.5, epochs_fraction=1.0)
    assert [x["edges"]["cell"]["stable_epochs"] for x in r] == [[1], [2], [1], [2]]
    assert [x["required_epochs"] for x in r] == [1, 2, 3, 4]
    assert [x["settled"] for x in r] == [1, 1, 0, 0]
    # Without exclusions `none` can be the top op (and a dropped edge's derived op is None).
    r = settling_record({"cell": [[0.7, 0.2, 0.1]]}, {"cell": [None]}, OPS, 1)
    assert r["edges"]["cell"]["top_op"] == ["none"] and r["edges"]["cell"]["derived_op"] == [None]
    assert r["settled"] == 1


def test_derived_ops_name_two_op_edges_and_dropped_edges():
    space = search_spaces.get("darts")
    text = ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_5x5', 1), ('max_pool_3x3', 2), "
            "('dil_conv_3x3', 0), ('dil_conv_3x3', 1), ('avg_pool_3x3', 3), ('sep_conv_3x3', 4)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])")
    ops = derived_ops(space, space.parse(text), {"normal": 14, "reduce": 14})
    # DARTS edge order: node 2 <- 0, 1; node 3 <- 0, 1, 2; node 4 <- 0..3; node 5 <- 0..4
    assert ops["normal"][:5] == ["sep_conv_3x3+skip_connect", None, None, "sep_conv_5x5", "max_pool_3x3"]
    assert ops["reduce"][:2] == ["max_pool_3x3", "max_pool_3x3"]
    assert sum(op is not None for op in ops["normal"]) == 7


def test_ops_no_derivation_picks_are_never_the_top_op():
    assert underivable_ops(search_spaces.get("darts"), {"normal": (14, 8), "reduce": (14, 8)}) == {"none"}
    assert underivable_ops(search_spaces.get("nb201"), {"cell": (6, 5)}) == set()


@pytest.mark.parametrize("key, value", [("search.settle_probability", 0), ("search.settle_probability", 1.5),
                                        ("search.settle_epochs_fraction", -0.1),
                                        ("search.settle_epochs_fraction", 2)])
def test_bad_settling_thresholds_are_one_line_errors(key, value):
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as e:
        build_config({}, [f"{key}={value}"])
    assert "\n" not in str(e.value)


def test_a_search_writes_the_record_the_log_line_and_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_search.main(["--out", str(out), *TINY, "model.derive_exclude=[none]"]) == 0
    printed = capsys.readouterr().out
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    # The record follows from metrics.jsonl alone: recompute it epoch by epoch.
    space, prev = search_spaces.get("nb201"), None
    for m in lines:
        derived = derived_ops(space, space.parse(m["genotype"]), {"cell": 6})
        prev = settling_record(m["probabilities"], derived, space.op_names, m["epoch"], prev, exclude=["none"])
        assert m["settling"] == prev
        assert f"epoch {m['epoch']:>3}/3" in printed and describe(prev) in printed
    summary = summary_line(lines[-1]["settling"], 3)
    assert summary in printed.splitlines()
    assert yaml.safe_load((out / "genotype.yaml").read_text())["settling"] == summary
    assert lines[-1]["settling"]["edges_total"] == 6

    # The report's settling panel plots exactly these numbers, with the threshold line.
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from nas.report.report import load_run
    from nas.report.figures import settling_figure
    fig = settling_figure(Figure, load_run(out), 0.4)
    (ax,) = fig.axes
    curves = [l for l in ax.get_lines() if l.get_linestyle() == "-"]
    for e, line in enumerate(curves):
        assert list(line.get_ydata()) == [m["settling"]["edges"]["cell"]["top_p"][e] for m in lines]
    assert len(curves) == 6
    assert any(list(l.get_ydata()) == [0.4, 0.4] for l in ax.get_lines() if l.get_linestyle() == "--")
    assert summary in fig._suptitle.get_text()


def test_settling_continues_exactly_after_a_resume(tmp_path):
    cfg = build_config({}, TINY + ["search.epochs=4"])
    full = build_searcher(cfg, tmp_path / "full", log=lambda s: None)
    (tmp_path / "full").mkdir()
    full.run()
    cut = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    (tmp_path / "cut").mkdir()
    cut.run(until_epoch=2)
    torch.randn(10)
    again = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    again.resume(tmp_path / "cut" / "checkpoint.pt")
    again.run()
    assert [m["settling"] for m in again.history] == [m["settling"] for m in full.history]
    # some edge kept its op across the cut at epoch 2, so a count restarted on resume would differ
    assert max(again.history[-1]["settling"]["edges"]["cell"]["stable_epochs"]) >= 3
