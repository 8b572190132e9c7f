"""Progressive shrinking of the candidate ops (nas/sampling/shrinking.py) and its use by the search."""
from __future__ import annotations

import pytest
import torch

import search_spaces  # noqa: F401
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.sampling.architecture import Architecture
from nas.sampling.shrinking import candidates, enable, ops_to_drop, shrink, shrink_due
from nas.utils.errors import UserError

TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=5", "search.arch_lr=0.05", "seed=3", "deterministic=true",
        "search.eval_every=0", "search.report=false"]
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def without_times(history: list[dict]) -> list[dict]:
    """The metrics lines without their wall times, which a resumed run cannot repeat."""
    return [{k: v for k, v in m.items() if k not in ("epoch_time", "shrink_time")} for m in history]


@pytest.mark.parametrize("every,start,due", [(0, 0, []), (1, 0, [1, 2, 3, 4, 5, 6]), (2, 0, [2, 4, 6]),
                                             (2, 1, [3, 5]), (3, 2, [5])])
def test_shrink_due_every_k_epochs_after_the_start(every, start, due):
    assert [e for e in range(1, 7) if shrink_due(e, every, start)] == due


def test_the_least_probable_op_goes_and_excluded_ops_never_count_towards_keep():
    p = torch.tensor([[0.10, 0.30, 0.20, 0.25, 0.15],   # lowest: none (col 0)
                      [0.40, 0.00, 0.35, 0.25, 0.00],   # cols 1, 4 already dropped: lowest allowed is 3
                      [0.50, 0.00, 0.00, 0.50, 0.00],   # none + one derivable op left, keep=1: none goes
                      [0.00, 0.00, 0.00, 1.00, 0.00]])  # one op left: nothing to drop
    allowed = p > 0
    allowed[0] = True
    protected = [name != "none" for name in OPS]
    assert ops_to_drop(p, allowed, 1, protected) == [0, 3, 0, None]
    # keep=2: the second edge must keep its 2 derivable ops, so `none` goes although it is the most probable;
    # the third holds 2 ops, no more than keep: it stays as it is.
    assert ops_to_drop(p, allowed, 2, protected) == [0, 0, None, None]
    assert ops_to_drop(p, allowed, 3, protected) == [0, None, None, None]
    # A tie goes to the higher column (the same op argmax would not pick).
    tie = torch.full((1, 5), 0.2)
    assert ops_to_drop(tie, torch.ones(1, 5, dtype=torch.bool), 1, [True] * 5) == [4]


def test_shrink_masks_ops_exactly_like_a_missing_op():
    torch.manual_seed(0)
    arch = Architecture({"cell": (6, 5)}, OPS, init_std=1.0)
    enable(arch)
    before = arch.probabilities()["cell"]
    dropped = shrink(arch, keep=1, exclude=["none"])["cell"]
    lowest = [OPS[int(k)] for k in before.argmin(-1)]
    assert dropped == lowest and candidates(arch)["cell"] == [4] * 6
    after = arch.probabilities()["cell"]
    for e, name in enumerate(dropped):
        assert after[e, OPS.index(name)] == 0
    # The rest keep their ratios (a renormalised softmax over the remaining ops).
    keep = after > 0
    assert torch.allclose(after[keep], (before * keep / (before * keep).sum(-1, keepdim=True))[keep], atol=1e-6)
    # Never sampled, and no gradient reaches a dropped logit.
    arch.seed(0)
    for _ in range(50):
        sample = arch.sample("gdas", 1.0)
        for e, name in enumerate(dropped):
            assert sample.indices["cell"][e] != OPS.index(name)
    (arch.sample("snas", 1.0).coefficients["cell"] * torch.randn(6, 5)).sum().backward()
    grad = arch.logits["cell"].grad
    assert all(grad[e, OPS.index(n)] == 0 for e, n in enumerate(dropped)) and grad.abs().sum() > 0


def test_shrinking_to_one_leaves_one_derivable_op_per_edge_and_none_goes_first_when_needed():
    torch.manual_seed(1)
    arch = Architecture({"cell": (6, 5)}, OPS, init_std=1.0)
    with torch.no_grad():
        arch.logits["cell"][:, 0] = 5.0  # none is the most probable everywhere
    enable(arch)
    for _ in range(6):
        shrink(arch, keep=1, exclude=["none"])
    allowed = arch.allowed_cell
    assert allowed.sum(-1).tolist() == [1] * 6 and not allowed[:, 0].any()


@pytest.mark.parametrize("key,value", [("shrink_every", -1), ("shrink_to", 0), ("shrink_start", -2)])
def test_bad_shrink_keys_are_one_line_errors(key, value):
    with pytest.raises(UserError, match=f"search.{key}"):
        build_config({}, [f"search.{key}={value}"])


def test_a_search_shrinks_on_schedule_and_a_resume_continues_exactly(tmp_path):
    cfg = build_config({}, TINY + ["search.shrink_every=1", "search.shrink_start=1", "model.derive_exclude=[none]"])
    full = build_searcher(cfg, tmp_path / "full", log=lambda s: None)
    (tmp_path / "full").mkdir()
    full.run()
    counts = [m["candidates"]["cell"] for m in full.history]
    assert counts == [[5] * 6, [4] * 6, [3] * 6, [2] * 6, [1] * 6]
    assert "dropped" not in full.history[0] and all("dropped" in m for m in full.history[1:])
    last = full.history[-1]
    assert last["settling"]["mean_top_p"] == 1.0 and "none" not in last["genotype"]
    # The genotype is the one op left on each edge.
    left = full.supernet.architecture.allowed_cell.float().argmax(-1).tolist()
    assert [OPS[k] for k in left] == last["settling"]["edges"]["cell"]["derived_op"]

    (tmp_path / "cut").mkdir()
    first = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    first.run(until_epoch=3)
    second = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    second.resume(tmp_path / "cut" / "checkpoint.pt")
    assert torch.equal(second.supernet.architecture.allowed_cell, first.supernet.architecture.allowed_cell)
    second.run()
    assert without_times(second.history) == without_times(full.history)


def test_sample_excluded_false_never_samples_trains_or_derives_the_excluded_ops(tmp_path):
    cfg = build_config({}, TINY + ["model.exclude_zero=true", "search.sample_excluded=false", "search.epochs=2"])
    searcher = build_searcher(cfg, out_dir=tmp_path, log=lambda *a: None)
    arch = searcher.supernet.architecture
    none = OPS.index("none")
    assert arch.allowed_cell[:, none].eq(False).all() and arch.allowed_cell[:, 1:].all()
    samples, _ = arch.sample_many("gdas", 1.0, 400)
    picked = torch.stack([s.coefficients["cell"].argmax(-1) for s in samples])  # [400, edges]
    assert (picked != none).all()
    # the four other ops share the draws about evenly (logits near 0): 100 +- 3 sigma (sigma ~8.7) each
    counts = torch.stack([(picked == k).sum(0) for k in range(1, 5)])
    assert counts.min() > 70 and counts.max() < 130, counts
    x, y = next(iter(searcher.data.val.epoch(0)))
    searcher.arch_step(x, y)
    grad = arch.logits["cell"].grad
    assert grad[:, 1:].abs().sum() > 0 and grad[:, none].abs().max() == 0  # it learns nothing either
    searcher.run()
    assert arch.allowed_cell[:, none].eq(False).all()  # still removed after a run
    assert any(k.endswith("allowed_cell") for k in searcher.supernet.state_dict())  # and in every checkpoint


def test_sample_excluded_true_is_the_default_and_samples_every_op():
    cfg = build_config({}, TINY + ["model.exclude_zero=true"])
    assert cfg.search.sample_excluded is True
    searcher = build_searcher(cfg, log=lambda *a: None)
    samples, _ = searcher.supernet.architecture.sample_many("gdas", 1.0, 200)
    picked = torch.stack([s.coefficients["cell"].argmax(-1) for s in samples])
    assert (picked == OPS.index("none")).any()


def test_given_scores_rank_the_ops_instead_of_their_probabilities():
    torch.manual_seed(2)
    arch = Architecture({"cell": (3, 5)}, OPS, init_std=1.0)
    enable(arch)
    probs = arch.probabilities()["cell"]
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.6],    # lowest score: nor_conv_1x1
                           [0.5, 0.9, 0.9, 0.2, 0.9],    # nor_conv_3x3
                           [-1.0, 0.3, 0.3, 0.3, 0.3]])  # none (unmeasured, -1) goes first; then a tie
    dropped = shrink(arch, keep=1, exclude=["none"], scores={"cell": scores})["cell"]
    assert dropped == ["nor_conv_1x1", "nor_conv_3x3", "none"]
    assert [OPS[int(k)] for k in probs.argmin(-1)] != dropped  # the probabilities would have dropped others
    assert shrink(arch, keep=1, exclude=["none"], scores={"cell": scores})["cell"][2] == "avg_pool_3x3"  # tie: higher


def test_bad_shrink_by_is_a_one_line_error():
    with pytest.raises(UserError, match="search.shrink_by.*logits, op_marginals"):
        build_config({}, ["search.shrink_by=accuracy"])


MARGINAL_SHRINK = TINY + ["model.exclude_zero=true", "search.sample_excluded=false", "search.epochs=4",
                          "search.shrink_every=1", "search.shrink_start=1", "search.shrink_by=op_marginals",
                          "search.select_samples=2", "search.warmup_epochs=4"]


def test_shrinking_by_op_marginals_drops_the_op_of_lowest_marginal_accuracy_and_resumes_exactly(tmp_path):
    cfg = build_config({}, MARGINAL_SHRINK)
    (tmp_path / "full").mkdir()
    full = build_searcher(cfg, tmp_path / "full", log=lambda s: None)
    full.run()
    derivable = OPS[1:]
    assert [m["candidates"]["cell"] for m in full.history] == [[4] * 6, [3] * 6, [2] * 6, [1] * 6]
    assert "shrink_marginals" not in full.history[0]
    per_edge_left = [set(derivable) for _ in range(6)]
    for m in full.history[1:]:
        table, dropped = m["shrink_marginals"]["cell"], m["dropped"]["cell"]
        assert m["shrink_time"] > 0
        for edge, (accs, gone) in enumerate(zip(table, dropped)):
            assert set(accs) == per_edge_left[edge]  # only the ops still candidates are measured
            assert all(0.0 <= a <= 100.0 for a in accs.values())
            lowest = min(accs.values())
            # the op with the lowest marginal goes (ties: the higher column, as for probabilities)
            assert gone == max((op for op, a in accs.items() if a == lowest), key=OPS.index)
            per_edge_left[edge].discard(gone)
    last = full.history[-1]
    assert [next(iter(s)) for s in per_edge_left] == last["settling"]["edges"]["cell"]["derived_op"]
    assert last["settling"]["mean_top_p"] == 1.0

    (tmp_path / "cut").mkdir()
    first = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    first.run(until_epoch=2)
    second = build_searcher(cfg, tmp_path / "cut", log=lambda s: None)
    second.resume(tmp_path / "cut" / "checkpoint.pt")
    second.run()
    assert without_times(second.history) == without_times(full.history)
