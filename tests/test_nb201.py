"""The NAS-Bench-201 space against the benchmark's published definition."""
import pytest
import torch

import search_spaces
from nas import UserError
from nas.spaces.registry import Registry
from search_spaces.nb201 import OP_NAMES, NB201Genotype, NB201SearchCell

SPACE = search_spaces.get("nb201")
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_all_conv3x3_network_has_the_benchmarks_parameter_count():
    # NAS-Bench-201: C=16, N=5, 10 classes, every edge nor_conv_3x3.
    assert count(SPACE.build_network(ALL_CONV3, num_classes=10, C=16, N=5)) == 1_531_546


def test_parameter_free_cells_leave_only_the_macro_skeleton():
    # stem conv 3*16*9 + BN 2*16; residual 16->32: 16*32*9 + 64 + 32*32*9 + 64 + 16*32;
    # residual 32->64: 32*64*9 + 128 + 64*64*9 + 128 + 32*64; head BN 128; linear 64*10 + 10.
    skeleton = 432 + 32 + (4608 + 64 + 9216 + 64 + 512) + (18432 + 128 + 36864 + 128 + 2048) + 128 + 650
    for op in ("none", "skip_connect", "avg_pool_3x3"):
        arch = SPACE.format(NB201Genotype(tuple(tuple((op, j) for j in range(i)) for i in range(1, 4))))
        assert count(SPACE.build_network(arch, num_classes=10, C=16, N=5)) == skeleton


def test_conv1x1_edge_adds_its_weights_in_every_cell():
    base = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    one = "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    # One 1x1 conv + affine BN per cell: C*C + 2C at widths 16, 32, 64, N=5 cells each.
    extra = sum(5 * (c * c + 2 * c) for c in (16, 32, 64))
    assert count(SPACE.build_network(one)) - count(SPACE.build_network(base)) == extra


def test_search_cells_use_bn_without_affine_or_running_stats():
    net = SPACE.build_supernet(C=8, N=1)
    cell_bns = [m for cell in net.cells if hasattr(cell, "edges") for m in cell.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_bns and all(not bn.affine and not bn.track_running_stats for bn in cell_bns)
    convs = [m for cell in net.cells if hasattr(cell, "edges") for m in cell.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)  # NB201: conv bias exactly when BN has no affine


def _macro_bns(net):
    """The stem, residual-reduction and head BNs (everything outside the search cells)."""
    return [m for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
            and not any(isinstance(c, NB201SearchCell) and name.startswith(f"cells.{i}.")
                        for i, c in enumerate(net.cells))]


def test_supernet_macro_bns_keep_running_stats_as_the_official_gdas_supernet():
    # TinyNetworkGDAS: stem Conv+BN, ResNetBasicblock and the head BN with default BNs (affine, running stats).
    net = SPACE.build_supernet(C=8, N=2)
    bns = _macro_bns(net)
    assert len(bns) == 1 + 2 * 2 + 1  # stem, two BNs in each of the two residual blocks, head
    assert all(bn.affine and bn.track_running_stats for bn in bns)
    x = torch.randn(16, 3, 8, 8) * 3 + 1
    net.train()(x)
    assert all(bn.num_batches_tracked.item() == 1 for bn in bns)
    assert bns[0].running_mean.abs().sum() > 0  # the stem BN saw the batch
    # In eval the stem and head use those running statistics: their output for one image does not
    # depend on its batch mates (the search cells still normalise with batch statistics).
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net.stem(x[:1]), net.stem(x)[:1], atol=1e-6)
        h = torch.randn(16, 32, 2, 2)
        assert torch.allclose(net.head(h[:1]), net.head(h)[:1], atol=1e-6)


def test_batch_stats_layout_normalises_every_supernet_bn_with_batch_statistics():
    net = SPACE.build_supernet(C=8, N=2, bn_layout="batch_stats")
    assert all(not m.track_running_stats for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    net.eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(net(x[:2])[:1], net(x)[:1], atol=1e-4)  # batch statistics in eval too


def test_unknown_bn_layout_is_refused():
    with pytest.raises(ValueError, match="bn_layout"):
        SPACE.build_supernet(C=8, N=1, bn_layout="tracked")


def test_supernet_has_the_official_gdas_supernets_parameter_count():
    # TinyNetworkGDAS(C=16, N=5, 10 classes), counted from its definition: the macro skeleton
    # (as above, 73,306) plus 5 search cells per width c in (16, 32, 64), each with 6 edges of
    # nor_conv_1x1 (c*c + c: conv with bias, BN without affine) and nor_conv_3x3 (9*c*c + c).
    skeleton = 432 + 32 + (4608 + 64 + 9216 + 64 + 512) + (18432 + 128 + 36864 + 128 + 2048) + 128 + 650
    cells = sum(5 * 6 * (10 * c * c + 2 * c) for c in (16, 32, 64))
    net = SPACE.build_supernet(C=16, N=5, num_classes=10)
    assert sum(p.numel() for p in net.weight_parameters()) == skeleton + cells == 1_692_826


def test_supernet_matches_the_official_tiny_network_gdas_module_by_module():
    search_model_gdas = pytest.importorskip("xautodl.models.cell_searchs.search_model_gdas")
    official = search_model_gdas.TinyNetworkGDAS(16, 5, 4, 10, list(OP_NAMES), False, False)
    ours = SPACE.build_supernet(C=16, N=5, num_classes=10)
    assert [tuple(p.shape) for p in official.get_weights()] == [tuple(p.shape) for p in ours.weight_parameters()]
    flags = lambda net: [(m.num_features, m.affine, m.track_running_stats) for m in net.modules()
                         if isinstance(m, torch.nn.BatchNorm2d)]
    assert flags(official) == flags(ours)
    assert [tuple(b.shape) for b in official.buffers()] == [tuple(b.shape) for b in ours.buffers()
                                                             if b.dtype != torch.bool]


def test_discrete_network_uses_affine_bn_and_no_conv_bias():
    net = SPACE.build_network(ALL_CONV3, C=8, N=1)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.affine and bn.track_running_stats for bn in bns)
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("text", [ALL_CONV3, EXAMPLE, "|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"])
def test_arch_string_round_trips(text):
    genotype = SPACE.parse(text)
    assert SPACE.format(genotype) == text
    assert len(genotype.edge_ops()) == 6


@pytest.mark.parametrize("text, fragment", [
    ("nor_conv_3x3~0|+|a", "start and end with '|'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "found 2 nodes"),
    ("|conv_7x7~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "unknown op 'conv_7x7'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|", "node 2 must take inputs 0..1"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 must take inputs 0..0"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "is not 'op~input'"),
])
def test_malformed_arch_strings_are_refused_with_the_reason(text, fragment):
    with pytest.raises(UserError) as info:
        SPACE.parse(text)
    assert fragment in str(info.value)
    assert "expected e.g." in str(info.value)


@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_supernet_returns_logits_in_every_mode(mode):
    net = SPACE.build_supernet(mode=mode, num_classes=7, C=4, N=1)
    net.tau = 2.0
    out = net(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert net.architecture.logits["cell"].grad is not None


def test_eval_mode_runs_only_the_argmax_ops_deterministically():
    from nas import ChoiceLayer
    torch.manual_seed(0)
    net = SPACE.build_supernet(C=4, N=1).eval()
    best = net.architecture.logits["cell"].argmax(-1).tolist()
    layers = [m for m in net.modules() if isinstance(m, ChoiceLayer)]
    ran = []
    handles = [op.register_forward_hook(lambda m, i, o, e=e, k=k: ran.append((e, k)))
               for e, layer in enumerate(layers) for k, op in enumerate(layer.ops)]
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        a, b = net(x), net(x)
    for h in handles:
        h.remove()
    assert torch.equal(a, b)
    assert sorted(set(ran)) == [(e, best[e % 6]) for e in range(len(layers))]


def test_derive_genotype_takes_the_argmax_of_every_edge_including_none():
    probs = torch.full((6, 5), 0.1)
    picks = [0, 3, 1, 4, 2, 0]
    for e, k in enumerate(picks):
        probs[e, k] = 0.6
    genotype = SPACE.derive_genotype({"cell": probs})
    assert genotype.edge_ops() == [OP_NAMES[k] for k in picks]


def test_random_genotypes_are_valid_and_seeded():
    a = SPACE.random_genotype(torch.Generator().manual_seed(1))
    b = SPACE.random_genotype(torch.Generator().manual_seed(1))
    assert a == b and SPACE.parse(SPACE.format(a)) == a


def test_registry_refuses_duplicates_and_suggests_names():
    reg = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(KeyError):
        reg.register("alpha", 2)
    with pytest.raises(UserError, match="did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(KeyError):
        search_spaces.nb201.register_space(search_spaces.nb201.NB201Space())
    assert "nb201" in search_spaces.names()
