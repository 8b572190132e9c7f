"""Anti-collapse options: DARTS- auxiliary skip, derivation caps, SDARTS-RS perturbation, logit clipping."""
import pytest
import torch

import search_spaces
from nas import ChoiceLayer
from nas.build import build_searcher
from nas.config import build_config
from nas.derive import derive_with_caps

TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=5", "seed=1"]


def quiet(*_):
    pass


def test_aux_skip_beta_decays_linearly_from_one_to_zero():
    searcher = build_searcher(build_config({}, TINY + ["search.aux_skip=true"]), log=quiet)
    betas = []
    for epoch in range(5):
        searcher.train_epoch(epoch)
        values = {layer.skip_beta for layer in searcher.choice_layers}
        assert len(values) == 1
        betas.append(values.pop())
    assert betas == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_aux_skip_adds_beta_times_the_input_on_an_identity_path():
    layer = ChoiceLayer({"none": search_spaces.nb201.OPS["none"](4, 4, 1, False, False),
                         "conv": search_spaces.nb201.OPS["nor_conv_3x3"](4, 4, 1, False, False)},
                        aux_skip=torch.nn.Identity())
    x = torch.randn(2, 4, 6, 6)
    w = torch.tensor([0.0, 1.0])
    plain = layer(x, w, 1)
    layer.skip_beta = 0.3
    torch.testing.assert_close(layer(x, w, 1), plain + 0.3 * x)
    torch.testing.assert_close(layer(x, torch.tensor([1.0, 0.0]), 0), 0.3 * x)  # even a sampled `none`


def test_without_the_option_the_supernet_output_is_unchanged():
    searcher = build_searcher(build_config({}, TINY), log=quiet)
    searcher.train_epoch(0)
    assert all(layer.skip_beta == 0.0 for layer in searcher.choice_layers)


def test_nb201_skip_cap_on_hand_made_probabilities():
    space = search_spaces.get("nb201")
    probs = torch.tensor([[0.05, 0.60, 0.10, 0.20, 0.05],   # skip, then conv3
                          [0.05, 0.50, 0.30, 0.10, 0.05],   # skip, then conv1
                          [0.05, 0.70, 0.05, 0.15, 0.05],   # skip (strongest: kept)
                          [0.05, 0.40, 0.05, 0.05, 0.45],   # pool
                          [0.05, 0.55, 0.05, 0.30, 0.05],   # skip, then conv3
                          [0.10, 0.20, 0.30, 0.30, 0.10]])  # conv1 (tie with conv3: lower index)
    uncapped = space.derive_genotype({"cell": probs})
    assert uncapped.edge_ops().count("skip_connect") == 4
    capped = derive_with_caps(space, {"cell": probs}, max_skip=1)
    assert capped.edge_ops() == ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3",
                                 "nor_conv_3x3", "nor_conv_1x1"]
    free = derive_with_caps(space, {"cell": probs}, max_parameter_free=1)
    assert sum(op in ("skip_connect", "avg_pool_3x3") for op in free.edge_ops()) == 1
    assert free.edge_ops()[2] == "skip_connect"  # the strongest parameter-free choice survives


def test_darts_skip_cap_keeps_each_cell_under_the_cap():
    space = search_spaces.get("darts")
    probs = {"normal": torch.full((14, 8), 0.05), "reduce": torch.full((14, 8), 0.05)}
    probs["normal"][:, 3] = torch.linspace(0.9, 0.5, 14)  # skip_connect everywhere
    probs["normal"][:, 4] = 0.3                           # sep_conv_3x3 runner-up
    genotype = derive_with_caps(space, probs, max_skip=2)
    ops = [op for op, _ in genotype.normal]
    assert ops.count("skip_connect") == 2 and ops.count("sep_conv_3x3") == 6
    assert space.derive_genotype(probs).normal.count(("skip_connect", 0)) >= 1  # uncapped: all skip
    assert [op for op, _ in space.derive_genotype(probs).normal].count("skip_connect") == 8


def test_perturbation_touches_only_the_weight_steps_sample():
    searcher = build_searcher(build_config({}, TINY + ["model.mode=darts", "search.perturb_logits=0.5"]),
                              log=quiet)
    seen = {}
    for name in ("weight_step", "arch_step"):
        original = getattr(searcher, name)
        def spy(x, y, sample, original=original, name=name):
            seen.setdefault(name, sample.weights["cell"].detach().clone())
            return original(x, y, sample)
        setattr(searcher, name, spy)
    logits = searcher.supernet.architecture.logits["cell"].detach().clone()
    searcher.train_epoch(0)
    exact = torch.softmax(logits, -1)
    assert torch.equal(seen["arch_step"], exact)          # the arch step sees the true architecture
    delta = (seen["weight_step"] - exact).abs().max().item()
    assert 1e-3 < delta < 0.5                               # the weight step a perturbed one


def test_arch_grad_clip_bounds_the_logit_gradient():
    searcher = build_searcher(build_config({}, TINY + ["search.arch_grad_clip=1e-4"]), log=quiet)
    x, y = next(searcher.data.val.epoch(0))
    searcher.arch_step(x, y)
    grad = searcher.supernet.architecture.logits["cell"].grad
    assert grad.norm().item() == pytest.approx(1e-4, rel=1e-3)


def test_derive_exclude_never_derives_none_and_otherwise_keeps_the_argmax():
    space = search_spaces.get("nb201")
    probs = torch.tensor([[0.60, 0.10, 0.15, 0.10, 0.05],   # none, then conv1
                          [0.05, 0.50, 0.30, 0.10, 0.05],   # skip
                          [0.40, 0.05, 0.05, 0.45, 0.05],   # conv3 (already ahead of none)
                          [0.70, 0.05, 0.05, 0.05, 0.15],   # none, then pool
                          [0.55, 0.05, 0.05, 0.30, 0.05],   # none, then conv3
                          [0.10, 0.20, 0.30, 0.30, 0.10]])  # conv1 (tie with conv3: lower index)
    assert space.derive_genotype({"cell": probs}).edge_ops().count("none") == 3
    derived = derive_with_caps(space, {"cell": probs}, exclude=["none"])
    assert derived.edge_ops() == ["nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3",
                                  "nor_conv_3x3", "nor_conv_1x1"]


@pytest.mark.parametrize("exclude, message", [
    (["nonee"], "'nonee', which is not an op of nb201"),
    (["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"], "excludes every op"),
])
def test_derive_exclude_rejects_unknown_or_all_ops(exclude, message):
    from nas.errors import UserError
    with pytest.raises(UserError, match=message):
        build_searcher(build_config({}, TINY + [f"model.derive_exclude={exclude}"]), log=quiet)


def test_searcher_with_derive_exclude_writes_a_genotype_without_none(tmp_path):
    searcher = build_searcher(build_config({}, TINY + ["model.derive_exclude=[none]", "search.epochs=2"]),
                              out_dir=tmp_path, log=quiet)
    searcher.run()
    text = (tmp_path / "genotype.yaml").read_text()
    assert "genotype: '|" in text and "none~" not in text


# --------------------------------------------------------------------------- PC-DARTS edge normalisation

DARTS_TINY = ["model.space=darts", "data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8",
              "data.batch_size=8", "model.C=4", "model.N=1", "search.epochs=1", "seed=2"]


def test_edge_weights_are_a_softmax_over_each_nodes_inputs():
    supernet = search_spaces.get("darts").build_supernet(C=4, N=1, edge_normalization=True)
    arch = supernet.architecture
    with torch.no_grad():
        arch.edge_logits["normal"].copy_(torch.arange(14.0))
    weights = arch.edge_weights()["normal"]
    edges = search_spaces.darts.EDGES
    for node in range(2, 6):
        rows = [e for e, (to, _) in enumerate(edges) if to == node]
        torch.testing.assert_close(weights[rows].sum(), torch.tensor(1.0))
        torch.testing.assert_close(weights[rows], torch.softmax(torch.arange(14.0)[rows], 0))


def test_edge_logits_are_arch_parameters_in_the_state_dict_and_learn_in_the_arch_step():
    searcher = build_searcher(build_config({}, DARTS_TINY + ["model.edge_normalization=true"]), log=quiet)
    supernet = searcher.supernet
    edge_params = list(supernet.architecture.edge_logits.values())
    assert all(any(p is q for q in supernet.arch_parameters()) for p in edge_params)
    assert not any(p is q for p in edge_params for q in supernet.weight_parameters())
    assert {"architecture.edge_logits.normal", "architecture.edge_logits.reduce"} <= set(supernet.state_dict())
    before = [p.detach().clone() for p in edge_params]
    x, y = next(iter(searcher.data.val.epoch(0)))
    searcher.weight_step(x, y)
    assert all(torch.equal(b, p) for b, p in zip(before, edge_params))  # the weight step leaves them alone
    searcher.arch_step(x, y)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge_params)
    assert not all(torch.equal(b, p) for b, p in zip(before, edge_params))


def test_edge_weights_scale_the_node_sums():
    torch.manual_seed(0)
    supernet = search_spaces.get("darts").build_supernet(mode="darts", C=4, N=1, edge_normalization=True).eval()
    plain = search_spaces.get("darts").build_supernet(mode="darts", C=4, N=1)
    plain.load_state_dict({k: v for k, v in supernet.state_dict().items() if "edge_logits" not in k})
    plain.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        supernet.architecture.edge_logits["normal"].fill_(0.0)
        supernet.architecture.edge_logits["reduce"].fill_(0.0)
        assert not torch.allclose(supernet(x), plain(x))  # uniform weights still rescale the nodes


def test_derivation_ranks_inputs_by_edge_weight_times_op_probability():
    supernet = search_spaces.get("darts").build_supernet(C=4, N=1, edge_normalization=True)
    arch = supernet.architecture
    edges = search_spaces.darts.EDGES
    with torch.no_grad():
        for group in ("normal", "reduce"):
            arch.logits[group].zero_()
            arch.logits[group][:, 4] = 2.0  # sep_conv_3x3 on every edge, equally strong
            arch.edge_logits[group].zero_()
            for e, (to, j) in enumerate(edges):
                if j == to - 1:
                    arch.edge_logits[group][e] = 3.0  # the previous node is the favourite input
                if j == to - 2:
                    arch.edge_logits[group][e] = 1.0
    space = search_spaces.get("darts")
    genotype = space.derive_genotype(arch.derivation_scores())
    assert [j for _, j in genotype.normal] == [1, 0, 2, 1, 3, 2, 4, 3]
    # without the edge weights every input ties and the lower inputs win
    assert [j for _, j in space.derive_genotype(arch.probabilities()).normal] == [0, 1, 0, 1, 0, 1, 0, 1]


def test_edge_normalization_is_refused_outside_the_darts_space():
    from nas.errors import UserError
    with pytest.raises(UserError, match="only darts has it"):
        build_searcher(build_config({}, TINY + ["model.edge_normalization=true"]), log=quiet)
