"""The DARTS space against DARTS's published definitions and figures."""
import pytest
import torch
import torch.nn as nn

import search_spaces
from nas import ChoiceLayer, UserError
from search_spaces.darts import (DERIVATION_RULES, EDGES, OP_NAMES, OPS, PUBLISHED, Genotype, _search_op)

SPACE = search_spaces.get("darts")

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
DARTS_V1 = ("Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
            "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])")
GDAS_V1 = ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('sep_conv_5x5', 2), "
           "('sep_conv_3x3', 3), ('skip_connect', 0), ('sep_conv_5x5', 4), ('sep_conv_3x3', 3)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 2), "
           "('sep_conv_5x5', 1), ('dil_conv_5x5', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), "
           "('sep_conv_5x5', 1)], reduce_concat=[2, 3, 4, 5])")
TEXTS = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "GDAS_V1": GDAS_V1}


def count(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ ops

@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_the_shape_at_stride_1_and_halves_it_at_stride_2(name, stride, size):
    x = torch.randn(2, 4, size, size)
    out_size = (size + stride - 1) // stride
    for op in (OPS[name](4, stride, True, True), _search_op(name, 4, stride)):
        assert op(x).shape == (2, 4, out_size, out_size)


# C=4: depthwise k*k*C, pointwise C*C, BN 2C; FactorizedReduce two 1x1 C -> C/2 convs + BN.
@pytest.mark.parametrize("name, stride, params", [
    ("none", 2, 0), ("max_pool_3x3", 2, 0), ("avg_pool_3x3", 2, 0), ("skip_connect", 1, 0),
    ("skip_connect", 2, 2 * 4 * 2 + 8), ("sep_conv_3x3", 1, 2 * (36 + 16 + 8)),
    ("sep_conv_5x5", 1, 2 * (100 + 16 + 8)), ("dil_conv_3x3", 1, 36 + 16 + 8), ("dil_conv_5x5", 1, 100 + 16 + 8),
])
def test_ops_have_darts_parameter_counts(name, stride, params):
    assert count(OPS[name](4, stride, True, True)) == params


def test_search_pools_get_a_bn_and_discrete_pools_do_not():
    for name in ("max_pool_3x3", "avg_pool_3x3"):
        bns = [m for m in _search_op(name, 4, 1).modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == 1 and not bns[0].affine and not bns[0].track_running_stats
        assert not any(isinstance(m, nn.BatchNorm2d) for m in OPS[name](4, 1, True, True).modules())


# ------------------------------------------------------------------ discrete network

def test_darts_v2_network_has_the_papers_parameter_count():
    # DARTS: C=36, 20 cells, 10 classes, no auxiliary head.
    assert count(SPACE.build_network(DARTS_V2, num_classes=10, C=36, N=6, auxiliary=False)) == 3_349_342


def test_network_layout_and_bn():
    net = SPACE.build_network(DARTS_V2, C=4, N=1)
    assert len(net.cells) == 5 and [c.reduction for c in net.cells] == [False, True, False, True, False]
    assert all(bn.affine and bn.track_running_stats for bn in net.modules() if isinstance(bn, nn.BatchNorm2d))
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert len(SPACE.build_network(GDAS_V1, C=4, N=6).cells) == 20


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_published_genotypes_parse_format_back_identically_and_build(name):
    genotype = SPACE.parse(TEXTS[name])
    assert genotype == PUBLISHED[name]
    assert SPACE.format(genotype) == TEXTS[name] == str(PUBLISHED[name])
    out = SPACE.build_network(genotype, num_classes=5, C=4, N=1).eval()(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5)


def test_auxiliary_head_in_training_mode_only():
    net = SPACE.build_network(DARTS_V2, num_classes=7, C=4, N=1, auxiliary=True)
    x = torch.randn(2, 3, 32, 32)  # the head expects 8x8 after the second reduction, as on CIFAR
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 7)
    assert net.eval()(x).shape == (2, 7)


def test_drop_path_acts_only_in_training():
    torch.manual_seed(0)
    net = SPACE.build_network(DARTS_V2, C=4, N=1, drop_path_prob=0.5)
    x = torch.randn(4, 3, 16, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.drop_path_prob = 0.0  # a training loop ramps the attribute
    assert torch.equal(net(x), net(x))
    net.drop_path_prob = 0.5
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


# ------------------------------------------------------------------ genotype strings

def test_range_concat_and_multiline_text_are_accepted():
    text = DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)").replace(", ", ",\n    ")
    assert SPACE.format(SPACE.parse(text)) == DARTS_V2


@pytest.mark.parametrize("text, fragment", [
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('conv_7x7', 2)"), "unknown op 'conv_7x7'"),
    (DARTS_V2.replace(", ('dil_conv_3x3', 2)]", "]"), "'normal' has 7 edges, must be 8 (2 per node"),
    (DARTS_V2.replace("[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),", "[('sep_conv_3x3', 2), ('sep_conv_3x3', 1),"),
     "edge 0 of 'normal' feeds node 2 from input 2, out of range (inputs 0..1)"),
    (DARTS_V2.replace("('skip_connect', 2), ('max_pool_3x3', 1)]", "('skip_connect', 2), ('max_pool_3x3', 5)]"),
     "out of range (inputs 0..4)"),
    (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "missing field 'reduce_concat'"),
    (DARTS_V2.replace("Genotype(", "Genome("), "not a Genotype(...) call"),
    ("__import__('os').system('true')", "not a Genotype(...) call"),
    (DARTS_V2[:-1], "not a Genotype(...) call (invalid syntax)"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=CONCAT"), "field 'normal_concat' is not a literal"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 6]"), "must list distinct nodes"),
    (DARTS_V2[:-1] + ", extra=1)", "unknown field 'extra'"),
    (DARTS_V2.replace("('sep_conv_3x3', 0)", "'sep_conv_3x3'", 1), "edge 0 of 'normal' is 'sep_conv_3x3'"),
])
def test_malformed_genotypes_are_refused_with_the_reason(text, fragment):
    with pytest.raises(UserError) as info:
        SPACE.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "expected e.g. Genotype(normal=[('sep_conv_3x3', 0)" in message and "\n" not in message


# ------------------------------------------------------------------ derivation

def node_rows(probs, to):
    return [e for e, (t, _) in enumerate(EDGES) if t == to]


def uniform():
    return torch.full((14, 8), 1 / 8)


def test_none_is_never_derived_even_when_strongest():
    probs = torch.full((14, 8), 0.01)
    probs[:, 0] = 0.9  # none strongest on every edge
    for e, (to, j) in enumerate(EDGES):
        probs[e, OP_NAMES.index("sep_conv_3x3")] = 0.02 + 0.01 * j  # the latest input is best
    expected = [("sep_conv_3x3", j) for to in range(2, 6) for j in (to - 1, to - 2)]  # strongest first
    for rule in DERIVATION_RULES:
        genotype = SPACE.derive_genotype({"normal": probs, "reduce": probs}, rule=rule)
        assert genotype.normal == genotype.reduce == expected, rule


def test_skip_heavy_probabilities_give_skip_everywhere_under_both_rules():
    probs = uniform() * 0.5
    skip = OP_NAMES.index("skip_connect")
    for e, (to, j) in enumerate(EDGES):
        probs[e, skip] = 0.5 + 0.01 * j
    expected = [("skip_connect", j) for to in range(2, 6) for j in (to - 1, to - 2)]
    for rule in DERIVATION_RULES:
        genotype = SPACE.derive_genotype({"normal": probs, "reduce": probs.clone()}, rule=rule)
        assert genotype.normal == genotype.reduce == expected
        assert genotype.normal_concat == genotype.reduce_concat == [2, 3, 4, 5]


def test_rules_differ_when_one_input_holds_the_two_best_ops():
    probs = uniform() * 0.1
    rows = node_rows(probs, 2)  # node 2: inputs 0 and 1
    probs[rows[0], OP_NAMES.index("sep_conv_3x3")] = 0.4
    probs[rows[0], OP_NAMES.index("sep_conv_5x5")] = 0.35
    probs[rows[1], OP_NAMES.index("dil_conv_3x3")] = 0.3
    darts = SPACE.derive_genotype({"normal": probs, "reduce": probs})
    gdas = SPACE.derive_genotype({"normal": probs, "reduce": probs}, rule="gdas")
    assert darts.normal[:2] == [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)]
    assert gdas.normal[:2] == [("sep_conv_3x3", 0), ("sep_conv_5x5", 0)]
    assert SPACE.parse(SPACE.format(gdas)) == gdas  # a repeated input is a valid genotype


def test_ties_go_to_the_lower_input_then_the_lower_op():
    probs = {"normal": uniform(), "reduce": uniform()}
    darts = SPACE.derive_genotype(probs, rule="darts")
    gdas = SPACE.derive_genotype(probs, rule="gdas")
    assert darts.normal == [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4
    assert gdas.normal == [("max_pool_3x3", 0), ("avg_pool_3x3", 0)] * 4


def test_unknown_rule_is_a_user_error():
    with pytest.raises(UserError, match="choose from darts, gdas"):
        SPACE.derive_genotype({"normal": uniform(), "reduce": uniform()}, rule="argmax")


# ------------------------------------------------------------------ supernet

@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_supernet_runs_forward_and_backward_in_every_mode(mode):
    torch.manual_seed(0)
    net = SPACE.build_supernet(mode=mode, num_classes=5, C=4, N=1)
    net.tau = 2.0
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    for group in ("normal", "reduce"):
        assert net.architecture.logits[group].grad is not None
    assert net.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_supernet_layout_matches_darts_search_network():
    net = SPACE.build_supernet()  # C=16, N=2: the 8-cell search network
    assert [c.reduction for c in net.cells] == [False, False, True, False, False, True, False, False]
    assert {g: tuple(p.shape) for g, p in net.architecture.logits.items()} == {"normal": (14, 8), "reduce": (14, 8)}
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618  # DARTS's train_search "param size"
    # model_search.py: the stem BN is affine, every cell BN is not; all keep running statistics.
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.track_running_stats for bn in bns)
    assert net.stem[1].affine
    assert all(not bn.affine for c in net.cells for bn in c.modules() if isinstance(bn, nn.BatchNorm2d))
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_supernet_running_stats_follow_the_sampled_ops_and_batch_stats_layout_has_none():
    net = SPACE.build_supernet(mode="gdas", num_classes=4, C=4, N=1)
    net.architecture.seed(0)
    net.train()(torch.randn(8, 3, 8, 8))
    tracked = {name: m.num_batches_tracked.item() for name, m in net.named_modules()
               if isinstance(m, nn.BatchNorm2d)}
    assert tracked["stem.1"] == 1
    assert 0 < sum(n == 1 for n in tracked.values()) < len(tracked)  # GDAS: only the sampled ops ran
    flat = SPACE.build_supernet(C=4, N=1, bn_layout="batch_stats")
    assert all(not m.track_running_stats for m in flat.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="bn_layout"):
        SPACE.build_supernet(C=4, N=1, bn_layout="tracked")


@pytest.mark.parametrize("gdas_gate", ["", "all_ops"])
def test_gdas_arch_backward_reaches_every_logit_of_both_groups(gdas_gate):
    # The space's rule (sampled_op, as GDAS's DARTS-space MixedOp.forward_gdas): an edge that sampled
    # `none` contributes h[i] * 0, so its row gets no gradient; every other row reaches all its logits.
    # Under all_ops (the NB201 cell's rule) every logit gets one.
    torch.manual_seed(0)
    net = SPACE.build_supernet(mode="gdas", num_classes=4, C=4, N=1, gdas_gate=gdas_gate)
    net.architecture.seed(3)
    for p in net.weight_parameters():
        p.requires_grad_(False)
    sample = net.architecture.sample("gdas", 1.0)
    loss = nn.functional.cross_entropy(net.forward_sample(torch.randn(2, 3, 16, 16), sample), torch.tensor([0, 3]))
    loss.backward()
    for group in ("normal", "reduce"):
        grad = net.architecture.logits[group].grad
        sampled_none = torch.tensor([OP_NAMES[i] == "none" for i in sample.indices[group]])
        assert grad is not None and (grad[~sampled_none] != 0).all(), group
        assert (grad[sampled_none] == 0).all() if gdas_gate == "" else (grad != 0).all(), group
    assert gdas_gate == "all_ops" or any("none" in (OP_NAMES[i] for i in sample.indices[g]) for g in sample.indices)


def test_gdas_runs_only_the_sampled_op_of_each_edge():
    torch.manual_seed(0)
    net = SPACE.build_supernet(mode="gdas", num_classes=4, C=4, N=1)
    calls = {}
    handles = [op.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
               for m in net.modules() if isinstance(m, ChoiceLayer) for op in m.ops]
    net.architecture.seed(5)
    expected = net.architecture.sample("gdas", 1.0).indices
    net.architecture.seed(5)
    net(torch.randn(2, 3, 16, 16))
    for h in handles:
        h.remove()
    for cell in net.cells:
        chosen = expected["reduce" if cell.reduction else "normal"]
        for e, layer in enumerate(cell.edges):
            ran = [calls.get(id(op), 0) for op in layer.ops]
            assert ran == [int(k == chosen[e]) for k in range(8)], (e, ran, chosen[e])


# ------------------------------------------------------------------ space helpers

def test_edge_names_follow_darts_order():
    names = SPACE.edge_names()
    assert names["normal"] == names["reduce"]
    assert names["normal"][:5] == ["2<-0", "2<-1", "3<-0", "3<-1", "3<-2"] and names["normal"][-1] == "5<-4"
    assert len(names["normal"]) == 14


def test_cell_graphs_use_darts_plot_names():
    graphs = SPACE.cell_graphs(PUBLISHED["DARTS_V2"])
    normal = graphs["normal"]
    assert normal[0] == ("c_{k-2}", "0", "sep_conv_3x3") and normal[1] == ("c_{k-1}", "0", "sep_conv_3x3")
    assert normal[7] == ("0", "3", "dil_conv_3x3")
    assert normal[8:] == [(str(i), "c_{k}", "concat") for i in range(4)]
    assert len(graphs["reduce"]) == 12


def test_random_genotypes_are_valid_seeded_and_cover_the_space():
    a = SPACE.random_genotype(torch.Generator().manual_seed(1))
    assert a == SPACE.random_genotype(torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    ops, last_pairs = set(), set()
    for _ in range(300):
        g = SPACE.random_genotype(generator)
        assert SPACE.parse(SPACE.format(g)) == g
        for cell in (g.normal, g.reduce):
            inputs = [j for _, j in cell]
            assert all(inputs[2 * i] != inputs[2 * i + 1] for i in range(4))
            ops |= {op for op, _ in cell}
            last_pairs.add(tuple(inputs[6:]))
    assert ops == set(OP_NAMES) - {"none"}
    assert len(last_pairs) == 10  # every pair of distinct inputs among 0..4


def test_space_is_registered():
    assert "darts" in search_spaces.names()
    assert isinstance(PUBLISHED["DARTS_V2"], Genotype)
