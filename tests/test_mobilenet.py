"""The FBNet-style mobilenet space: ops, masking, genotype strings and the timm export."""
import pytest
import timm
import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models._efficientnet_builder import decode_arch_def

import search_spaces
from nas import UserError
from nas.spaces.derive import derive_with_caps
from search_spaces.mobilenet import (OP_NAMES, SKIP, STAGES, MobileNetGenotype, Widths, layer_rows,
                                     stage_strides)

SPACE = search_spaces.get("mobilenet")
SMALL = dict(C=8, head_width=32)  # widths 8, 8, 8, 8, 16, 24, 40, 80; head 32


def count(module):
    return sum(p.numel() for p in module.parameters())


def supernet(mode="gdas", N=2, input_size=16):
    torch.manual_seed(0)
    return SPACE.build_supernet(mode=mode, num_classes=5, N=N, input_size=input_size, **SMALL)


def first_of_stage_rows(N):
    return [r for r, (_, b) in enumerate(layer_rows(N)) if b == 0]


def test_layout_rows_are_block_major_prefixes_and_named_by_edge_names():
    assert len(layer_rows(1)) == 7 and len(layer_rows(2)) == 12 and len(layer_rows(4)) == 17
    for n in (1, 2, 3):
        assert layer_rows(n) == layer_rows(4)[: len(layer_rows(n))]
    assert SPACE.edge_names()["layers"][:8] == ["s0.b0", "s1.b0", "s2.b0", "s3.b0", "s4.b0", "s5.b0", "s6.b0", "s1.b1"]
    assert stage_strides(32) == (1, [1, 1, 2, 2, 1, 2, 1]) and stage_strides(224) == (2, [1, 2, 2, 2, 1, 2, 1])
    assert Widths.of(32) == Widths(1.0, 32, (16, 24, 32, 64, 96, 160, 320), 1280)


def test_every_op_of_a_layer_gives_the_same_shape():
    net = supernet(N=2).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        x = net.stem(x)
        for layer in net.layers:
            outs = [op(x) for op in layer.ops]
            assert len({tuple(o.shape) for o in outs}) == 1, layer.op_names
            x = outs[0]
    assert x.shape[-1] == 2  # CIFAR layout: total stride 8


@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_supernet_forward_backward_in_each_mode(mode):
    net = supernet(mode)
    net.tau = 1.0
    out = net(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 5)
    out.logsumexp(1).mean().backward()
    (raw,) = net.arch_parameters()
    assert raw.shape == (12, 7) and raw.grad is not None and torch.isfinite(raw.grad).all()
    assert raw.grad.abs().sum() > 0
    assert torch.all(raw.grad[first_of_stage_rows(2), SKIP] == 0)  # a masked logit learns nothing
    assert all(p.grad is not None for p in net.stem.parameters())


def test_search_blocks_have_bn_without_affine_or_running_stats():
    bns = [m for layer in supernet().layers for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.affine and not bn.track_running_stats for bn in bns)
    assert all(isinstance(op, InvertedResidual) for layer in supernet().layers for op in list(layer.ops)[:SKIP])


def test_masked_skip_is_never_sampled_nor_derived():
    net = supernet(N=2)
    arch = net.architecture
    masked = first_of_stage_rows(2)
    allowed = arch.allowed_layers
    assert allowed.sum() == 12 * 7 - len(masked) and not allowed[masked, SKIP].any()
    with torch.no_grad():
        arch.logits["layers"][:, SKIP] = 30.0  # skip would win everywhere unmasked
    arch.seed(0)
    samples, _ = arch.sample_many("gdas", 5.0, 300)
    for s in samples:
        assert all(s.indices["layers"][r] != SKIP for r in masked)
        assert torch.all(s.coefficients["layers"][masked, SKIP] == 0)
    assert sum(s.indices["layers"][7] == SKIP for s in samples) > 250  # s1.b1 may skip, and does
    soft = arch.sample("snas", 10.0).coefficients["layers"]
    assert torch.all(soft[masked, SKIP] == 0) and torch.all(arch.probabilities()["layers"][masked, SKIP] == 0)
    assert all(arch.derive("gdas").indices["layers"][r] != SKIP for r in masked)
    genotype = SPACE.derive_genotype(arch.probabilities())
    assert all(ops[0] != "skip" for ops in genotype.stages)
    assert all(ops[1:] == ("skip",) for ops in genotype.stages if len(ops) == 2)
    # The masked logits learn nothing: their gradient is exactly zero.
    arch.sample("gdas", 1.0).coefficients["layers"].pow(2).sum().backward()
    assert torch.all(arch.logits["layers"].grad[masked, SKIP] == 0)
    assert arch.logits["layers"].grad[~allowed.logical_not()].abs().sum() > 0
    # derive_genotype excludes masked ops even from probabilities that favour them
    probs = torch.full((12, 7), 0.1)
    probs[:, SKIP] = 0.4
    assert all(ops[0] == OP_NAMES[0] for ops in SPACE.derive_genotype({"layers": probs}).stages)


def test_derivation_caps_rule_out_skips():
    probs = torch.full((12, 7), 0.1)
    probs[:, SKIP] = 0.4
    assert sum(op == "skip" for _, op in SPACE.derive_genotype({"layers": probs}).layers()) == 5
    capped = derive_with_caps(SPACE, {"layers": probs}, max_skip=1)
    assert sum(op == "skip" for _, op in capped.layers()) == 1
    edges = SPACE.genotype_edges(capped)
    assert [r for _, r, _ in edges] == [0, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6]  # network order -> logit rows


def test_masked_architecture_state_dict_round_trips():
    a, b = supernet(), supernet()
    with torch.no_grad():
        a.arch_parameters()[0].normal_()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.architecture.probabilities()["layers"], b.architecture.probabilities()["layers"])


def test_genotype_string_round_trips_and_drops_skips():
    genotype = SPACE.random_genotype(torch.Generator().manual_seed(3))
    text = SPACE.format(genotype)
    assert SPACE.format(SPACE.parse(text)) == text
    parsed = SPACE.parse(text)
    assert parsed.stages == tuple(tuple(op for op in ops if op != "skip") for ops in genotype.stages)
    with_skip = MobileNetGenotype((("ir_k3_e6",), ("ir_k5_e3", "skip"), ("ir_k7_e6",), ("ir_k3_e3",),
                                   ("ir_k3_e3",), ("ir_k3_e3",), ("ir_k3_e6",)))
    assert with_skip.arch_def()[1] == ["ir_r1_k5_s2_e3_c24"]
    assert SPACE.cell_graphs(with_skip)["layers"][:3] == [
        ("in", "s0.b0", "ir_k3_e6"), ("s0.b0", "s1.b0", "ir_k5_e3"), ("s1.b0", "s1.b1", "skip")]
    # timm's repeat notation is read as that many blocks
    two = str([["ir_r1_k3_s1_e6_c16"], ["ir_r2_k3_s2_e6_c24"]] + [[f"ir_r1_k3_s{s}_e6_c{c}"] for c, s, _ in STAGES[2:]])
    assert SPACE.parse(two).stages[1] == ("ir_k3_e6", "ir_k3_e6")


@pytest.mark.parametrize("text, why", [
    ("", "not a Python list"),
    ("__import__('os')", "not a Python list"),
    ("[['ir_r1_k3_s1_e6_c16']]", "1 stages"),
    ("[[1]] * 7", "not a Python list"),
    ("[['ir_r1_k4_s1_e6_c16'], [], [], [], [], [], []]", "kernel must be"),
    ("[['ir_r1_k3_s1_e6_c17'], [], [], [], [], [], []]", "16 channels"),
    ("[['ir_r1_k3_s2_e6_c16'], [], [], [], [], [], []]", "stride must be 1"),
    ("[['ds_r1_k3_s1_c16'], [], [], [], [], [], []]", "is not 'ir_r"),
    ("[['ir_r1_k3_s1_e6_c16'], [], [], [], [], [], []]", "stage 1 has 0 blocks"),
    ("[['ir_r2_k3_s1_e6_c16'], [], [], [], [], [], []]", "stage 0 has 2 blocks"),
])
def test_malformed_arch_defs_raise_one_line_user_errors(text, why):
    with pytest.raises(UserError) as err:
        SPACE.parse(text)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_arch_def_round_trips_through_timms_decoder():
    genotype = SPACE.random_genotype(torch.Generator().manual_seed(1))
    decoded = decode_arch_def(SPACE.parse(SPACE.format(genotype)).arch_def())
    for (c, stride, _), ops, stage in zip(STAGES, genotype.stages, decoded):
        blocks = [op for op in ops if op != "skip"]
        assert len(stage) == len(blocks)
        for i, (op, args) in enumerate(zip(blocks, stage)):
            assert args["block_type"] == "ir" and f"ir_k{args['dw_kernel_size']}_e{args['exp_ratio']:g}" == op
            assert args["out_chs"] == c and args["stride"] == (stride if i == 0 else 1)


def test_timm_create_model_builds_the_discrete_network():
    genotype = SPACE.random_genotype(torch.Generator().manual_seed(2))
    text = SPACE.format(genotype)
    model = timm.create_model("mobilenet_searched", genotype=text, num_classes=10, **SMALL)
    net = SPACE.build_network(text, num_classes=10, N=4, **SMALL)
    assert type(model) is type(net) and isinstance(net, timm.models.efficientnet.EfficientNet)
    assert model.state_dict().keys() == net.state_dict().keys()
    assert count(model) == count(net)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)  # CIFAR: total stride 8
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.affine and bn.track_running_stats for bn in bns)
    with pytest.raises(UserError):
        SPACE.build_network(text, auxiliary=True)


def test_imagenet_layout_has_total_stride_32():
    text = SPACE.format(SPACE.random_genotype(torch.Generator().manual_seed(4)))
    model = SPACE.build_network(text, input_size=224, **SMALL).eval()
    assert model.conv_stem.stride == (2, 2)
    assert model.forward_features(torch.zeros(1, 3, 64, 64)).shape[-2:] == (2, 2)


def test_discrete_blocks_are_the_supernets_ops_with_affine_bn():
    net = supernet(N=4, input_size=32)
    with torch.no_grad():
        net.arch_parameters()[0].normal_(generator=torch.Generator().manual_seed(5))
    genotype = SPACE.derive_genotype(net.architecture.probabilities())
    model = SPACE.build_network(genotype, **SMALL)
    chosen = [layer.ops[layer.op_names.index(op)] for layer, (_, op) in zip(net.layers, genotype.layers())
              if op != "skip"]
    blocks = [block for stage in model.blocks for block in stage]
    assert len(blocks) == len(chosen)
    for block, op in zip(blocks, chosen):
        bn_channels = sum(m.num_features for m in block.modules() if isinstance(m, nn.BatchNorm2d))
        assert count(block) == count(op) + 2 * bn_channels  # the same convs; BN gains weight and bias
    assert count(model.conv_stem) == count(net.stem[0]) and count(model.conv_head) == count(net.head[0])
