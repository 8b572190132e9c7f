"""The choice layer and architecture: what runs, what gets gradients, and planted-choice recovery."""
import pytest
import torch
import torch.nn as nn

import search_spaces
from nas import Architecture, ChoiceLayer, tau_at
from nas.layers.ops import Zero


class Negate(nn.Module):
    def forward(self, x):
        return -x


class Roll(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=-1)


def planted_ops():
    return {"none": Zero(1, 1, 1), "skip_connect": nn.Identity(), "negate": Negate(), "roll": Roll()}


@pytest.mark.parametrize("mode", ["gdas", "snas", "darts"])
def test_planted_choice_is_recovered(mode):
    """Only `roll` reproduces the target; its logit must end highest within 300 steps."""
    torch.manual_seed(0)
    layer = ChoiceLayer(planted_ops())
    arch = Architecture({"edge": (1, 4)}, layer.op_names)
    arch.seed(0)
    opt = torch.optim.Adam(arch.parameters(), lr=0.05)
    steps = 300
    for step in range(steps):
        x = 1.0 + torch.randn(32, 1, 1, 8)  # non-zero mean: a sampled `none` gives a signal too
        target = torch.roll(x, 1, dims=-1)
        sample = arch.sample(mode, tau_at("linear", step, steps, 5.0, 0.5))
        index = None if sample.indices is None else sample.indices["edge"][0]
        out = layer(x, sample.coefficients["edge"][0], index)
        loss = ((out - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = arch.probabilities()["edge"][0]
    assert probs.argmax().item() == layer.op_names.index("roll"), probs


def _count_calls(modules):
    calls = {id(m): 0 for m in modules}
    def hook(module, inputs, output):
        calls[id(module)] += 1
    handles = [m.register_forward_hook(hook) for m in modules]
    return calls, handles


def _supernet(mode="gdas"):
    torch.manual_seed(0)
    return search_spaces.get("nb201").build_supernet(mode=mode, num_classes=4, C=4, N=1)


def test_gdas_runs_only_the_sampled_op():
    net = _supernet("gdas")
    net.tau = 1.0
    layers = [m for m in net.modules() if isinstance(m, ChoiceLayer)]
    ops = [op for layer in layers for op in layer.ops]
    calls, handles = _count_calls(ops)
    net.architecture.seed(5)
    expected = net.architecture.sample("gdas", 1.0).indices["cell"]
    net.architecture.seed(5)
    net(torch.randn(2, 3, 8, 8))
    for h in handles:
        h.remove()
    cells = len(layers) // 6
    for c, layer in enumerate(layers):
        ran = [calls[id(op)] for op in layer.ops]
        chosen = expected[c % 6]
        assert ran == [1 if k == chosen else 0 for k in range(len(ran))], (c, ran, chosen)
    assert cells == 3  # N=1: one search cell per stage


def test_sampled_none_costs_no_convolution():
    net = _supernet("gdas")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    calls, handles = _count_calls(convs)
    with torch.no_grad():
        net.architecture.logits["cell"].fill_(-1e4)
        net.architecture.logits["cell"][:, 0] = 1e4  # every edge samples `none`
    net(torch.randn(2, 3, 8, 8))
    for h in handles:
        h.remove()
    cell_convs = [m for layer in net.modules() if isinstance(layer, ChoiceLayer)
                  for m in layer.modules() if isinstance(m, nn.Conv2d)]
    assert cell_convs and all(calls[id(m)] == 0 for m in cell_convs)
    # Only the stem and the two residual blocks convolved.
    assert sum(calls.values()) == 1 + 2 * 3


def test_weight_step_leaves_unsampled_ops_untouched_and_arch_step_reaches_every_logit():
    from nas.data import build_search_data, make_synthetic
    from nas.engine.search import Searcher
    from nas.config import SearchConfig

    net = _supernet("gdas")
    space = search_spaces.get("nb201")
    data = build_search_data(make_synthetic(64, 4, 8), 0.5, 16)
    searcher = Searcher(net, space, data, SearchConfig(epochs=2, weight_decay=5e-4), seed=11)
    net.tau = 1.0
    layers = [m for m in net.modules() if isinstance(m, ChoiceLayer)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    logits_before = net.architecture.logits["cell"].detach().clone()

    generator_state = net.architecture.generator.get_state()
    chosen = net.architecture.sample("gdas", 1.0).indices["cell"]
    net.architecture.generator.set_state(generator_state)
    x, y = next(data.train.epoch(0))
    searcher.weight_step(x, y)  # draws its own sample

    after = net.state_dict()
    names = {id(p): n for n, p in net.named_parameters()}
    for i, layer in enumerate(layers):
        for k, op in enumerate(layer.ops):
            for p in op.parameters():
                changed = not torch.equal(before[names[id(p)]], after[names[id(p)]])
                assert changed == (k == chosen[i % 6]), (i, k, names[id(p)])
    assert torch.equal(net.architecture.logits["cell"], logits_before)  # the weight step never moves logits

    searcher.arch_step(x, y)
    grad = net.architecture.logits["cell"].grad
    assert grad is not None and (grad != 0).all()
    # ...and the arch step leaves every weight as it was.
    after_arch = net.state_dict()
    for n, _ in net.named_parameters():
        if not n.startswith("architecture."):
            assert torch.equal(after[n], after_arch[n]), n


def test_logits_are_parameters_in_state_dict_and_apart_from_weights():
    net = _supernet()
    assert "architecture.logits.cell" in net.state_dict()
    arch = net.arch_parameters()
    assert len(arch) == 1 and arch[0].shape == (6, 5)
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert id(arch[0]) not in weight_ids
    assert len(weight_ids) + 1 == len(list(net.parameters()))


def test_one_sample_covers_all_edges_and_indices_are_host_ints():
    arch = Architecture({"normal": (14, 8), "reduce": (14, 8)}, [f"op{i}" for i in range(8)])
    arch.seed(0)
    sample = arch.sample("gdas", 1.0)
    assert set(sample.indices) == {"normal", "reduce"}
    assert all(isinstance(i, int) for i in sample.indices["normal"] + sample.indices["reduce"])
    for group in ("normal", "reduce"):
        assert sample.coefficients[group].shape == (14, 8)
        assert torch.equal(sample.coefficients[group].argmax(-1), torch.tensor(sample.indices[group]))


@pytest.mark.parametrize("mode", ["snas", "darts"])
def test_soft_modes_weight_every_op(mode):
    arch = Architecture({"cell": (6, 5)}, ["a", "b", "c", "d", "e"])
    arch.seed(0)
    sample = arch.sample(mode, 1.0)
    assert sample.indices is None
    w = sample.coefficients["cell"]
    assert (w > 0).all() and torch.allclose(w.sum(-1), torch.ones(6))
    if mode == "darts":
        assert torch.allclose(w, torch.softmax(arch.logits["cell"], -1))
