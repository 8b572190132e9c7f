"""The search's val accuracy is the exported genotype's, on the supernet's shared weights.

Each test fixes the logits so that the per-edge argmax differs from the genotype
(`none` strongest on some edges, skips over a cap, two best ops on one input),
runs one warm-up epoch (weights train, logits stay) and recomputes the loss and
accuracy another way: a forward written here that builds the genotype's network
from the supernet's modules by hand, over the same batches.
"""
import pytest
import torch
import torch.nn.functional as F

import search_spaces  # noqa: F401
from nas.cli.build import build_searcher
from nas.layers.choice import ChoiceLayer
from nas.config import build_config
from search_spaces import darts as darts_space
from search_spaces import nb201 as nb201_space

TINY = ["data.dataset=synthetic", "data.synthetic_size=96", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=1", "search.warmup_epochs=1", "seed=5", "deterministic=true",
        "search.report=false"]


def searcher_with_logits(extra, set_logits):
    searcher = build_searcher(build_config({}, TINY + extra), log=lambda s: None)
    with torch.no_grad():
        set_logits(searcher.supernet.architecture.logits)
    return searcher


def nb201_by_hand(net, genotype, x):
    """The genotype's NB201 network from the supernet's modules: each edge runs its op, nothing else."""
    ops = genotype.edge_ops()
    x = net.stem(x)
    for cell in net.cells:
        if isinstance(cell, nb201_space.NB201SearchCell):
            nodes = [x]
            for i in range(1, nb201_space.NUM_NODES):
                total = None
                for e, (to, j) in enumerate(nb201_space.EDGES):
                    if to == i:
                        layer = cell.edges[e]
                        out = layer.ops[layer.op_names.index(ops[e])](nodes[j])
                        total = out if total is None else total + out
                nodes.append(total)
            x = nodes[-1]
        else:
            x = cell(x)
    return net.classifier(net.head(x))


def darts_by_hand(net, genotype, x):
    """The genotype's DARTS network from the supernet's modules: each node sums its two kept (op, input) pairs."""
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        pairs = genotype.reduce if cell.reduction else genotype.normal
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        for node in range(darts_space.NUM_NODES):
            total = None
            for op, j in pairs[2 * node: 2 * node + 2]:
                layer = cell.edges[darts_space.EDGES.index((node + 2, j))]
                out = layer.ops[layer.op_names.index(op)](states[j])
                total = out if total is None else total + out
            states.append(total)
        s0, s1 = s1, torch.cat(states[2:], dim=1)
    return net.classifier(net.global_pooling(s1).flatten(1))


@torch.no_grad()
def loss_and_acc_by_hand(searcher, forward, genotype):
    # Training mode: every BN normalises with the batch's statistics, as the search's evaluation must
    # (running statistics gathered over sampled architectures fit none of them). The running statistics
    # this updates do not enter either figure.
    net = searcher.supernet.train()
    loss, correct, n = 0.0, 0, 0
    for x, y in searcher.data.val_eval.epoch(0):  # the same batches
        logits = forward(net, genotype, x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += y.numel()
    return loss / n, 100.0 * correct / n


def ops_that_ran(searcher, run):
    """(group, row) -> the op names each choice layer ran while ``run()`` ran (forward hooks on every op)."""
    seen, hooks = {}, []
    for group, row, layer in searcher.supernet.choice_layers():
        for name, op in zip(layer.op_names, layer.ops):
            hooks.append(op.register_forward_hook(
                lambda *_, key=(group, row, id(layer)), name=name: seen.setdefault(key, set()).add(name)))
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    merged = {}
    for (group, row, _), names in seen.items():
        merged.setdefault((group, row), set()).update(names)
    return merged


def nb201_logits(logits):
    table = logits["cell"]  # [6, 5]: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    table.mul_(0.01)[:, 3] += 1.0
    table[[0, 2, 5], 0] += 2.0  # `none` strongest on three edges


@pytest.mark.parametrize("mode", ["gdas", "darts"])
def test_nb201_val_acc_is_the_genotype_without_none(mode):
    searcher = searcher_with_logits([f"model.mode={mode}", "model.derive_exclude=[none]"], nb201_logits)
    assert searcher.supernet.architecture.derive("gdas").indices["cell"] == [0, 3, 0, 3, 3, 0]  # argmax: none x3
    m = searcher.run()
    genotype = searcher.space.parse(m["genotype"])
    assert genotype.edge_ops() == ["nor_conv_3x3"] * 6
    loss, acc = loss_and_acc_by_hand(searcher, nb201_by_hand, genotype)
    assert m["val_loss"] == pytest.approx(loss, rel=1e-5) and m["val_acc"] == pytest.approx(acc, abs=1e-9)
    if mode == "darts":  # the soft mixture under its own name
        assert {"supernet_val_loss", "supernet_val_acc"} <= m.keys() and 0 <= m["supernet_val_acc"] <= 100
        assert m["supernet_val_loss"] != pytest.approx(loss, rel=1e-3)
    else:
        assert "supernet_val_acc" not in m


def darts_logits(logits):
    for table in logits.values():  # [14, 8]: none, max_pool, avg_pool, skip, sep3, sep5, dil3, dil5
        table.mul_(0.01)[:, 4] += 1.0
        table[2::2, 0] += 3.0         # `none` strongest on every other edge (the DARTS rules never keep it)
        table[2:, 3] += 1.5           # skip the strongest real op on nodes 3..5: the cap must act
        table[0, 7] += 3.0            # node 2: its two best pairs both come from input 0 (the gdas rule)
        table[0, 4] += 1.5
        table[1, 4] -= 1.0


@pytest.mark.parametrize("mode", ["gdas", "darts"])
@pytest.mark.parametrize("rule, extra", [
    ("darts", ["model.max_skip=1"]),
    ("gdas", ["model.max_skip=1"]),
    ("darts", ["model.max_skip=2", "model.edge_normalization=true"]),
])
def test_darts_val_acc_is_the_genotype_under_its_rule_and_cap(mode, rule, extra):
    searcher = searcher_with_logits(["model.space=darts", f"model.mode={mode}", f"model.derivation={rule}", *extra],
                                    darts_logits)
    m = searcher.run()
    genotype = searcher.space.parse(m["genotype"])
    cap = int(extra[0].split("=")[1])
    for kind in ("normal", "reduce"):
        pairs = getattr(genotype, kind)
        assert sum(op == "skip_connect" for op, _ in pairs) == cap  # the cap acted: skips were strongest
        assert not any(op == "none" for op, _ in pairs)
        if rule == "gdas":  # an edge that carries two ops
            assert pairs[0][1] == pairs[1][1] == 0 and {pairs[0][0], pairs[1][0]} == {"dil_conv_5x5", "sep_conv_3x3"}
    loss, acc = loss_and_acc_by_hand(searcher, darts_by_hand, genotype)
    assert m["val_loss"] == pytest.approx(loss, rel=1e-5) and m["val_acc"] == pytest.approx(acc, abs=1e-9)

    # Which ops ran: exactly the genotype's on every kept edge, the zero op on every dropped one.
    ran = ops_that_ran(searcher, lambda: searcher.evaluate(searcher.data.val_eval))
    for kind in ("normal", "reduce"):
        kept = {}
        for k, (op, j) in enumerate(getattr(genotype, kind)):
            kept.setdefault(darts_space.EDGES.index((k // 2 + 2, j)), set()).add(op)
        for e in range(len(darts_space.EDGES)):
            assert ran[kind, e] == kept.get(e, {"none"}), (kind, e)


def test_choice_layer_runs_a_genotypes_ops_summed_and_the_zero_op_when_dropped():
    layer = ChoiceLayer({name: nb201_space.OPS[name](2, 2, 1, False, False) for name in nb201_space.OP_NAMES})
    layer.skip_beta = 0.5  # the genotype has no auxiliary skip: it must not be added
    x = torch.randn(2, 2, 4, 4)
    w = torch.zeros(5)
    assert torch.equal(layer(x, w, (1, 4)), x + layer.ops[4](x))
    assert torch.equal(layer(x, w, ()), torch.zeros_like(x))
