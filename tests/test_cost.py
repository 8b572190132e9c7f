"""Cost tables, expected cost, the FBNet and additive objectives, and the latency profiler."""
import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import search_spaces
from nas import ArchSample, UserError
from nas.cost.objective import CostConfig, CostObjective, CostTables, cost_tables, expected_cost
from nas.cost.latency import build_supernet_for, main as latency_main
from nas.layers.ops import ReLUConvBN
from nas.engine.train import count_flops
from timm.models._efficientnet_blocks import InvertedResidual

SMALL = {"nb201": dict(C=4, N=1), "darts": dict(C=4, N=1), "mobilenet": dict(C=8, N=2, head_width=32)}
SHAPE = {"nb201": (3, 8, 8), "darts": (3, 8, 8), "mobilenet": (3, 16, 16)}


def supernet(space, mode="gdas", seed=0):
    torch.manual_seed(seed)
    net = search_spaces.get(space).build_supernet(mode=mode, num_classes=10, **SMALL[space])
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()  # a definite argmax
    return net


def flops_of(run):
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def test_choice_layers_cover_every_row_of_every_group():
    nb201 = supernet("nb201").choice_layers()
    assert len(nb201) == 3 * 6 and {(g, e) for g, e, _ in nb201} == {("cell", e) for e in range(6)}
    darts = supernet("darts").choice_layers()
    assert sum(g == "reduce" for g, _, _ in darts) == 2 * 14 and sum(g == "normal" for g, _, _ in darts) == 3 * 14
    mobile = supernet("mobilenet").choice_layers()
    assert sorted(e for _, e, _ in mobile) == list(range(12))


def test_nb201_flops_table_by_hand():
    tables = cost_tables(supernet("nb201"), SHAPE["nb201"], "flops")
    table = tables.tables["cell"]  # [6, 5]: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    C, HW = 4, 8 * 8  # every stage has C*C*HW = 4*4*64 = 8*8*16 = 16*16*4 (the width doubles as H, W halve)
    assert table[:, 3].tolist() == [3 * 2 * C * C * 9 * HW] * 6  # 3 cells of a 3x3 conv (bias not counted)
    assert table[:, 2].tolist() == [3 * 2 * C * C * HW] * 6
    assert table[:, [0, 1, 4]].abs().sum() == 0
    discrete = ReLUConvBN(C, C, 3, 1, 1).eval()  # affine BN, no conv bias: the same count
    assert flops_of(lambda: discrete(torch.zeros(1, C, 8, 8))) == 2 * C * C * 9 * HW


def test_mobilenet_flops_entry_matches_the_discrete_block():
    net = supernet("mobilenet")
    tables = cost_tables(net, SHAPE["mobilenet"], "flops")
    row = net.rows.index(1)  # logit row 1 is s1.b0: 8 -> 8 channels, stride 1 at 16x16 (CIFAR layout)
    block = InvertedResidual(8, 8, dw_kernel_size=5, stride=1, exp_ratio=6.0, act_layer=torch.nn.ReLU6).eval()
    expected = flops_of(lambda: block(torch.zeros(1, 8, 16, 16)))
    assert expected == 2 * 16 * 16 * (8 * 48 + 48 * 25 + 48 * 8)  # pw expand, 5x5 depthwise, pw project
    assert tables.tables["layers"][1, 3] == expected and net.layers[row].op_names[3] == "ir_k5_e6"
    assert tables.tables["layers"][0, 6] == 0  # the masked placeholder costs nothing


@pytest.mark.parametrize("space", ["nb201", "mobilenet"])
def test_expected_cost_of_the_argmax_sample_is_the_derived_networks_flops(space):
    # Exact: the tables and count_flops use the same counter, which skips BN, activations and
    # additions alike, and the search ops have the discrete ops' convolutions.
    net = supernet(space)
    sp = search_spaces.get(space)
    tables = cost_tables(net, SHAPE[space], "flops")
    genotype = sp.derive_genotype(net.architecture.probabilities())
    discrete = sp.build_network(genotype, **SMALL[space])
    objective = CostObjective(tables)
    assert objective.derived_cost(net.genotype_sample(sp.genotype_edges(genotype))) == count_flops(discrete, SHAPE[space])
    assert float(expected_cost(net.architecture.derive("gdas"), tables)) == count_flops(discrete, SHAPE[space])


DERIVATIONS = [  # (space, derivation rule, max_skip, derive_exclude): every switch that reshapes the genotype
    ("nb201", None, -1, ["none"]), ("nb201", None, 0, []), ("darts", "darts", 1, []), ("darts", "gdas", 1, []),
    ("mobilenet", None, 0, []),
]


@pytest.mark.parametrize("space, rule, max_skip, exclude", DERIVATIONS)
def test_derived_cost_is_the_flops_of_the_exported_genotypes_network(space, rule, max_skip, exclude):
    from nas.spaces.derive import derive_with_caps

    net = supernet(space, seed=2)
    sp = search_spaces.get(space)
    with torch.no_grad():  # a conv, then `none` or a skip on several edges: exclusion and caps change the genotype
        for logits in net.architecture.logits.values():
            logits.mul_(0.1)[:, 3] += 2.0  # nor_conv_3x3, sep_conv_3x3, ir_k5_e3
            logits[::2, 0 if space != "mobilenet" else 6] += 3.0  # none (mobilenet: skip)
            if space != "mobilenet":
                logits[1::3, sp.op_names.index("skip_connect")] += 4.0
    probs = net.architecture.probabilities()
    genotype = derive_with_caps(sp, probs, rule, max_skip=max_skip, exclude=exclude)
    assert sp.format(genotype) != sp.format(sp.derive_genotype(probs, rule))  # the switches did act
    discrete = sp.build_network(genotype, **SMALL[space])
    objective = CostObjective(cost_tables(net, SHAPE[space], "flops"), form="additive", target=1.0)
    derived = objective.derived_cost(net.genotype_sample(sp.genotype_edges(genotype)))
    assert derived == count_flops(discrete, SHAPE[space])
    assert derived != float(expected_cost(net.architecture.derive("gdas"), objective.tables))  # not the argmax


def test_darts_gdas_rule_genotype_with_two_ops_on_one_edge_costs_both():
    sp = search_spaces.get("darts")
    net = supernet("darts")
    probs = {g: torch.full((14, 8), 0.01) for g in ("normal", "reduce")}
    for g in probs:  # node 2: both best pairs come from input 0 (edge 0)
        probs[g][0, 4], probs[g][0, 7], probs[g][1, 5] = 0.9, 0.8, 0.1
    genotype = sp.derive_genotype(probs, "gdas")
    assert genotype.normal[:2] == [("sep_conv_3x3", 0), ("dil_conv_5x5", 0)]
    sample = net.genotype_sample(sp.genotype_edges(genotype))
    assert sample.indices["normal"][0] == (4, 7) and sample.indices["normal"][1] == ()
    tables = cost_tables(net, SHAPE["darts"], "flops")
    objective = CostObjective(tables)
    discrete = sp.build_network(genotype, **SMALL["darts"])
    assert objective.derived_cost(sample) == count_flops(discrete, SHAPE["darts"])


def test_mobilenet_bounds_ignore_the_masked_placeholder():
    """The cheapest MobileNet network has a real block on every shape-changing layer, not the free placeholder."""
    net = supernet("mobilenet")
    sp = search_spaces.get("mobilenet")
    objective = CostObjective(cost_tables(net, SHAPE["mobilenet"], "flops"))
    low, high = objective.bounds()
    table = objective.tables.tables["layers"]
    allowed = net.architecture.allowed_layers
    assert (~allowed).any() and bool((table[~allowed] == 0).all())  # the placeholders sit in the table at 0
    genotype = sp.derive_genotype({"layers": torch.where(allowed, -table / table.max(), -2.0)})
    assert low == count_flops(sp.build_network(genotype, **SMALL["mobilenet"]), SHAPE["mobilenet"])
    assert low == objective.derived_cost(net.genotype_sample(sp.genotype_edges(genotype)))
    dearest = sp.derive_genotype({"layers": torch.where(allowed, table / table.max(), -2.0)})
    assert high == count_flops(sp.build_network(dearest, **SMALL["mobilenet"]), SHAPE["mobilenet"])


def test_darts_expected_cost_of_a_hard_sample_is_the_sampled_supernets_flops():
    # A DARTS genotype keeps 2 of 14 edges per cell, so compare with the sampled subnetwork itself.
    net = supernet("darts").eval()
    tables = cost_tables(net, SHAPE["darts"], "flops")
    net.architecture.seed(1)
    sample = net.architecture.sample("gdas", 1.0)
    with torch.no_grad():
        sampled = flops_of(lambda: net.forward_sample(torch.zeros(2, *SHAPE["darts"]), sample.detach())) / 2
    assert float(expected_cost(sample.detach(), tables)) == sampled


@pytest.mark.parametrize("space", ["nb201", "darts", "mobilenet"])
@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_expected_cost_gradient_reaches_the_logits(space, mode):
    net = supernet(space, mode)
    tables = cost_tables(net, SHAPE[space], "flops")
    net.architecture.seed(0)
    expected_cost(net.architecture.sample(mode, 1.0), tables).backward()
    for p in net.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all()


def test_params_table_sums_to_the_supernets_weights():
    for space in ("nb201", "mobilenet"):
        net = supernet(space)
        tables = cost_tables(net, SHAPE[space], "params")
        total = tables.base + sum(float(t.sum()) for t in tables.tables.values())
        assert total == sum(p.numel() for p in net.weight_parameters())
    conv3 = cost_tables(supernet("nb201"), SHAPE["nb201"], "params").tables["cell"][0, 3]
    assert conv3 == sum(9 * c * c + c for c in (4, 8, 16))  # a cell per stage; the search conv has a bias


def hand_tables():
    return CostTables("flops", 100.0, {"g": torch.tensor([[0.0, 10.0], [20.0, 30.0]], dtype=torch.float64)})


def one_hot(rows, requires_grad=False):
    w = torch.zeros(2, 2)
    w[0, rows[0]] = w[1, rows[1]] = 1.0
    return ArchSample({"g": w.requires_grad_(requires_grad)})


def test_fbnet_and_additive_forms_on_hand_values():
    ce = torch.tensor(2.0)
    sample = one_hot((1, 0))  # cost 100 + 10 + 20 = 130
    fbnet = CostObjective(hand_tables(), form="fbnet", alpha=0.2, beta=0.6)
    assert float(fbnet.expected(sample)) == 130.0
    assert math.isclose(float(fbnet.loss(ce, sample)), 2.0 * 0.2 * math.log(130.0) ** 0.6, rel_tol=1e-6)
    additive = CostObjective(hand_tables(), form="additive", target=100.0, lam=0.5)
    assert math.isclose(float(additive.loss(ce, sample)), 2.0 + 0.5 * 30.0 / 100.0, rel_tol=1e-6)
    assert additive.loss(ce, sample).dtype == ce.dtype
    soft = ArchSample({"g": torch.tensor([[0.5, 0.5], [0.25, 0.75]], requires_grad=True)})
    cost = fbnet.expected(soft)  # 100 + 5 + (5 + 22.5)
    assert cost.item() == 132.5
    cost.backward()
    assert soft.coefficients["g"].grad.tolist() == [[0.0, 10.0], [20.0, 30.0]]
    assert fbnet.bounds() == (120.0, 140.0)


def test_objective_refuses_bad_forms():
    with pytest.raises(UserError, match="target > 0"):
        CostObjective(hand_tables(), form="additive", target=0.0)
    with pytest.raises(UserError, match="log"):
        CostObjective(CostTables("latency", 0.5, {"g": torch.zeros(2, 2, dtype=torch.float64)}), form="fbnet")
    with pytest.raises(UserError, match="unknown cost form"):
        CostObjective(hand_tables(), form="ratio")


@pytest.mark.parametrize("values, key", [
    (dict(metric="mflops"), "cost.metric"), (dict(form="mul"), "cost.form"), (dict(alpha=-1.0), "cost.alpha"),
    (dict(metric="flops", form="additive"), "cost.target"), (dict(metric="latency"), "cost.table"),
    (dict(metric="latency", table="/nonexistent.json"), "cost.table"), (dict(beta=float("nan")), "cost.beta"),
])
def test_cost_config_errors_name_the_key(values, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        CostConfig(**values).validate()


def test_from_config():
    net = supernet("nb201")
    assert CostObjective.from_config(CostConfig(), net, SHAPE["nb201"]) is None
    objective = CostObjective.from_config(CostConfig(metric="flops"), net, SHAPE["nb201"])
    low, high = objective.bounds()
    genotype = search_spaces.get("nb201").derive_genotype(net.architecture.probabilities())
    assert 0 < low < objective.derived_cost(net.genotype_sample(search_spaces.get("nb201").genotype_edges(genotype))) <= high


def test_latency_profiler_writes_a_table_that_cost_tables_reads(tmp_path, capsys):
    out = tmp_path / "latency.json"
    args = ["--space", "nb201", "--C", "2", "--N", "1", "--input-size", "8", "--in-channels", "3",
            "--batch", "2", "--device", "cpu", "--repeats", "2", "--warmup", "0", "--out", str(out)]
    assert latency_main(args) == 0
    table = json.loads(out.read_text())
    assert table["unit"] == "ms" and table["pass"] == "forward" and table["base_ms"] > 0
    assert len(table["layers"]) == 18 and table["layers"][0]["name"] == "cells.0.edges.0"
    assert all(layer["ms"][0] == 0.0 and all(ms > 0 for ms in layer["ms"][1:]) for layer in table["layers"])
    net = build_supernet_for("nb201", C=2, N=1, input_size=8, in_channels=3)
    tables = cost_tables(net, (3, 8, 8), "latency", latency_table=out)
    assert tables.tables["cell"].shape == (6, 5) and tables.base == table["base_ms"]
    assert torch.all(tables.tables["cell"][:, 0] == 0) and torch.all(tables.tables["cell"][:, 1:] > 0)
    other = build_supernet_for("nb201", C=4, N=1, input_size=8, in_channels=3)
    with pytest.raises(UserError, match="rerun python -m nas.cost.latency"):
        cost_tables(other, (3, 8, 8), "latency", latency_table=out)


@pytest.mark.parametrize("space", ["mobilenet", "nb201"])
def test_a_tight_flops_budget_derives_a_cheaper_network(space):
    """Same seed, same data: the budgeted search must derive fewer FLOPs than the plain one."""
    from nas.cli.build import build_searcher
    from nas.config import build_config
    from nas.engine.train import count_flops

    base = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=16", "data.batch_size=16",
            f"model.space={space}", "model.C=8", "model.N=1", "search.epochs=3", "search.arch_lr=0.05",
            "search.tau_max=1.0", "search.tau_min=0.5", "seed=0", "search.report=false"]
    flops = {}
    for name, extra in (("plain", []), ("budget", ["cost.metric=flops", "cost.form=additive",
                                                   "cost.target=1000", "cost.lam=5.0"])):
        searcher = build_searcher(build_config({}, base + extra), log=lambda *_: None)
        searcher.run()
        genotype = searcher.derive(searcher.supernet.architecture.probabilities())
        net = searcher.space.build_network(genotype, num_classes=4, C=8, N=1, in_channels=3,
                                           **({"input_size": 16} if space == "mobilenet" else {}))
        flops[name] = count_flops(net, (3, 16, 16))
    assert flops["budget"] < flops["plain"], flops
